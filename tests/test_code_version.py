"""`code_version` tracks what the science code computes, not its comments or docstrings."""

from __future__ import annotations

from workloads import code_text, code_version

SOURCE = '''"""Module docstring."""
import math  # why math


def f(x):
    """What f does,
    on two lines."""
    # a comment line

    return math.sqrt(x) + len("# not a comment")  # trailing


class C:
    """Doc."""
    y = 1
'''


def test_comments_docstrings_and_blank_lines_do_not_count() -> None:
    reworded = (SOURCE.replace("why math", "another reason").replace("What f does", "f computes")
                .replace("# a comment line", "") + "\n\n# appended\n")
    assert code_text(reworded) == code_text(SOURCE)
    assert '"# not a comment"' in code_text(SOURCE) and "docstring" not in code_text(SOURCE)
    assert "Doc." not in code_text(SOURCE) and "y = 1" in code_text(SOURCE)


def test_code_changes_count() -> None:
    assert code_text(SOURCE.replace("sqrt", "exp")) != code_text(SOURCE)
    assert code_text(SOURCE.replace('"# not a comment"', '"#"')) != code_text(SOURCE)
    inline = 'def g():\n    """doc"""; return 1\n'  # a docstring sharing its line with code keeps the line
    assert "return 1" in code_text(inline)


def test_code_version_is_stable_and_versioned() -> None:
    assert code_version() == code_version() and code_version().startswith("0.")
