"""The science of qmu-bench: data, circuits, simulators, models, training, unlearning, attacks, metrics.

Knows nothing of Ray, the result store or reports.
"""

from functools import lru_cache

__version__ = "0.1.0"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a hash of the science sources without comments, docstrings and blank lines,
    so results track what the code computes and an edited comment keeps every stored stage valid."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):  # subpackages (attacks, unlearning) are science too
        h.update(path.relative_to(root).as_posix().encode())
        h.update(code_text(path.read_text(encoding="utf-8")).encode())
    return f"{__version__}+{h.hexdigest()[:12]}"


def code_text(source: str) -> str:
    """`source` without comments, docstrings (any statement that is only a plain string literal), trailing
    spaces and blank lines. One pass over the tokens, which name comments and strings the same way in every
    Python version (`ast.dump` does not)."""
    import io
    import re
    import tokenize

    lines = source.splitlines()
    blank: set[int] = set()
    at_start, strings = True, []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tok.type
        if kind == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
        elif kind == tokenize.NEWLINE:
            if strings:  # the statement was string literals only
                blank.update(range(strings[0].start[0] - 1, strings[-1].end[0]))
            at_start, strings = True, []
        elif kind in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        elif (at_start or strings) and kind == tokenize.STRING and "f" not in re.match(r"[A-Za-z]*", tok.string)[0].lower():
            strings.append(tok)
            at_start = False
        else:
            at_start, strings = False, []
    return "\n".join(line.rstrip() for i, line in enumerate(lines) if i not in blank and line.strip())
