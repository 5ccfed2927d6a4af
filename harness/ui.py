"""Console output shared by the `qmu` commands.

User text (grid values, paths, SQL, error messages) is never parsed as Rich markup: a value such as `[/x]`
would raise MarkupError, and `[red]` would silently vanish from the message.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

err = Console(stderr=True, highlight=False)
TOKEN_ENV = "QISKIT_IBM_TOKEN"
DEBUG_ENV = "QMU_DEBUG"
INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


class Interrupted(Exception):
    """Ctrl-C, carrying what was kept and how to go on; `qmu` prints it as one `interrupted:` line, exit 130."""


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
    """The `qmu` command group: every way a command can end is one line on stderr.

    A usage mistake (unknown flag, missing argument, bad flag value) is one `error:` line naming it, exit 2,
    like every other bad input (click's default is a four-line usage block). Ctrl-C is one `interrupted:`
    line saying what was kept, exit 130. Any other exception is a bug or an environment problem: one
    `error:` line with its type and message, exit 1, and QMU_DEBUG=1 prints the traceback too.

    Click's exceptions are recognised by their public interface (`exit_code`, `format_message`), not their
    classes: typer raises those of its own copy of click, whose module is private and changes between
    versions."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # typer would turn it into a silent exit 130; say what was kept
            raise Interrupted("nothing more was done; re-run the command to go on") from None

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except Interrupted as e:
            sys.exit(_interrupted(str(e)))
        except (KeyboardInterrupt, typer.Abort):  # Ctrl-C outside a command (while parsing, or old click)
            sys.exit(_interrupted("nothing was done"))
        except Exception as e:  # noqa: BLE001 -- the one place where every error becomes one line
            sys.exit(_click_error(e) if _is_click_error(e) else _unexpected(e))
        sys.exit(rv if isinstance(rv, int) else 0)


def _is_click_error(e: BaseException) -> bool:
    return isinstance(getattr(e, "exit_code", None), int) and callable(getattr(e, "format_message", None))


def _click_error(e) -> int:
    """Print click's error as one line (the help for a bare group); return its exit code."""
    if type(e).__name__ == "NoArgsIsHelpError":  # `qmu` or `qmu hw` alone: the help is the answer
        e.show()
        return e.exit_code
    ctx = getattr(e, "ctx", None)
    if e.exit_code == 2:  # a usage error
        path = ctx.command_path if ctx else "qmu"
        fail(f"{path}: {e.format_message().rstrip('.')}; see `{path} -h`")
        return 2
    fail(e.format_message(), e.exit_code)
    return e.exit_code


def _unexpected(e: BaseException) -> int:
    """One line for an error no command expected: its type and message, and how to see the traceback."""
    if os.environ.get(DEBUG_ENV):
        err.print(Text(scrub_env("".join(traceback.format_exception(type(e), e, e.__traceback__)))), end="")
    first = (str(e).strip().splitlines() or [""])[0][:500]
    hint = "" if os.environ.get(DEBUG_ENV) else f" ({DEBUG_ENV}=1 shows the traceback)"
    fail(f"{type(e).__name__}{': ' + first if first else ''}{hint}", 1)
    return 1


def _interrupted(msg: str) -> int:
    """The one line of a Ctrl-C, on a fresh line (a progress bar may have been mid-line), colours reset."""
    err.print(Text(f"interrupted: {scrub_env(msg)}"), soft_wrap=True)
    return INTERRUPTED
