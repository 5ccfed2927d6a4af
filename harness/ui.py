"""Console output shared by the `qmu` commands.

User text (grid values, paths, SQL, error messages) is never parsed as Rich markup: a value such as `[/x]`
would raise MarkupError, and `[red]` would silently vanish from the message.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

try:  # recent typer carries its own copy of click, and raises that copy's exceptions
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

err = Console(stderr=True, highlight=False)
TOKEN_ENV = "QISKIT_IBM_TOKEN"


def scrub_env(text: str) -> str:
    """`text` without the IBM token of the environment (the saved account's is scrubbed by workloads.quantum.backends)."""
    tok = os.environ.get(TOKEN_ENV)
    return text.replace(tok, "***") if tok and len(tok) >= 4 else text


def fail(msg: str, code: int = 2) -> typer.Exit:
    """Print one error line (no markup, no token) and return the Exit to raise: 2 bad input, 1 failed work."""
    err.print(Text("error: ", style="bold red") + Text(scrub_env(msg)), soft_wrap=True)
    return typer.Exit(code)


def note(msg: str) -> None:
    """A plain line on stderr (warnings and hints), no markup."""
    err.print(Text(scrub_env(msg)), soft_wrap=True)


def fmt_duration(s: float) -> str:
    """12 s, 4m05s, 2h03m: the one duration format of the CLI and the progress display."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    n = int(round(s))
    return f"{n // 3600}h{n % 3600 // 60:02d}m" if n >= 3600 else f"{n // 60}m{n % 60:02d}s"


def examples(*lines: str) -> str:
    """A help epilog of example command lines, kept verbatim by click (the \\b marker stops rewrapping), with
    their `# comments` in one column."""
    split = [(c.rstrip(), f"# {r.strip()}" if r else "") for c, _, r in (ln.partition(" # ") for ln in lines)]
    width = max((len(c) for c, r in split if r), default=0)  # lines without a comment don't push the column
    return "\b\nExamples:\n" + "\n".join(f"  {c:<{width}}  {r}".rstrip() for c, r in split)


class OneLineErrors(TyperGroup):
    """The `qmu` command group: a usage mistake (unknown flag, missing argument, bad flag value) is one
    `error:` line naming it, exit 2, like every other bad input; click's default is a four-line usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click_errors.UsageError as e:
            path = e.ctx.command_path if e.ctx else "qmu"
            fail(f"{path}: {e.format_message().rstrip('.')}; see `{path} -h`")
            sys.exit(2)
        except click_errors.ClickException as e:
            fail(e.format_message(), e.exit_code)
            sys.exit(e.exit_code)
        except click_errors.Abort:
            note("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
