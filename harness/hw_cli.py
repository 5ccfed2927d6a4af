"""`qmu hw ...`: hardware jobs through a ledger (estimate, submit, collect, status).

Placeholder sub-app mounted by `harness.cli`; the hardware issue fills in these commands.
"""

from __future__ import annotations

import typer

app = typer.Typer(name="hw", no_args_is_help=True, help="Hardware jobs through a ledger (QPU budget).")


def _todo(cmd: str) -> None:
    typer.echo(f"qmu hw {cmd}: not implemented yet", err=True)
    raise typer.Exit(1)


@app.command()
def estimate() -> None:
    """Estimate QPU seconds of a hardware grid."""
    _todo("estimate")


@app.command()
def submit() -> None:
    """Submit hardware jobs within the QPU budget."""
    _todo("submit")


@app.command()
def collect() -> None:
    """Collect finished hardware jobs into the result store."""
    _todo("collect")


@app.command()
def status() -> None:
    """Show the ledger of hardware jobs."""
    _todo("status")
