"""`code_version` tracks what the science code computes, not its comments or docstrings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _version_of(pkg: Path) -> str:
    """code_version() of the `workloads` copy under `pkg` (its parent first on the path), in a fresh process:
    the installed package caches its own."""
    code = "import workloads; print(workloads.__file__, workloads.code_version())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=pkg.parent, env={**os.environ, "PYTHONPATH": str(pkg.parent)}).stdout.split()
    assert out[0] == str(pkg / "__init__.py"), out
    return out[1]


def test_code_version_follows_the_sources(tmp_path: Path) -> None:
    """A copy of the package has the installed version; a reworded comment keeps it, a changed line of any
    module (subpackages too) changes it."""
    import workloads

    pkg = tmp_path / "workloads"
    shutil.copytree(Path(workloads.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    assert _version_of(pkg) == code_version() and code_version().startswith(f"{workloads.__version__}+")
    target = sorted(pkg.glob("*/*.py"))[0]
    target.write_text("# a new comment\n" + target.read_text())
    assert _version_of(pkg) == code_version()
    target.write_text(target.read_text() + "\nANSWER = 42\n")
    assert _version_of(pkg) != code_version()
