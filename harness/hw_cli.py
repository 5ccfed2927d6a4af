"""`qmu hw ...`: evaluation on IBM Quantum hardware (or fake/aer backends) through a job ledger.

    qmu hw estimate GRID.yaml        circuits, shots and estimated QPU seconds per cell and in total
    qmu hw submit GRID.yaml          simulator stages, then submit the evaluation jobs (Batch mode), record
                                     every job id in the ledger before waiting; cells past --max-qpu-seconds
                                     are stored as budget_skipped (`qmu run` on ibm: backends does the same)
    qmu hw collect                   fetch finished jobs (also after a killed driver, another day), store rows
    qmu hw status                    pending / done / failed jobs, with reasons

Exit codes: 0 ok, 1 some cells failed, 2 bad input (grid, credentials, a budget no cell fits, no or a corrupt
ledger). Missing credentials for an `ibm:` backend fail with exit 2 before any work. The token never appears
in output or the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .ui import examples

app = typer.Typer(name="hw", no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Hardware jobs through a ledger and a QPU budget (ibm:, fake:, aer backends).",
                  epilog=examples("qmu hw estimate grids/hardware.yaml",
                                  "qmu hw submit grids/hardware.yaml --max-qpu-seconds 1200",
                                  "qmu hw status && qmu hw collect"))
RESULTS_HELP = "results root: a local directory or a pyarrow filesystem URI"
LEVEL_HELP = "preset pass manager optimization level (0-3; default 1 or $QMU_HW_OPTIMIZATION_LEVEL)"


def _fail(msg: str, code: int = 2) -> typer.Exit:
    from workloads.quantum.backends import scrub

    from .ui import fail

    return fail(scrub(msg), code)


def _store(results: str, need_ledger: bool = False):
    """The store (exit 2 on a bad URI) and, with need_ledger, exit 2 when no job was ever recorded there."""
    from .hardware import Ledger
    from .loading import open_store

    store = open_store(results)
    if need_ledger and not Ledger(store).exists():
        where = store.base if store.local else store.root
        raise _fail(f"--results {where}: no hardware ledger there (no hw/jobs); submit first with "
                    "`qmu hw submit GRID.yaml --max-qpu-seconds N`, or point --results at the store you submitted to")
    return store


def _load(grid: Path):
    from .loading import load_grid

    spec = load_grid(grid)
    from workloads.quantum.backends import kind

    bad = [b for b in spec.axes["backend"] if not kind(b).QISKIT]
    if bad:
        raise _fail(f"{grid}: backend: {bad[0]!r} is not a hardware backend; use fake:<Name>, ibm:<name>, aer or "
                    "aer-noise (run simulator grids with `qmu run`)")
    return spec


def _level(level: Optional[int]) -> Optional[int]:
    if level is not None and level not in (0, 1, 2, 3):
        raise _fail(f"--optimization-level: expected 0, 1, 2 or 3, got {level}")
    return level


@app.command(epilog=examples("qmu hw estimate grids/hardware.yaml"))
def estimate(
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="grid spec YAML"),
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    optimization_level: Optional[int] = typer.Option(None, help=LEVEL_HELP),
) -> None:
    """Circuits, shots and estimated QPU seconds per cell and in total (cells already stored excluded)."""
    from workloads.quantum.backends import BackendError

    from .hardware import Ledger, LedgerError, estimate as est_cells, plan_cells

    spec = _load(grid)
    store = _store(results)
    try:
        plans = plan_cells(spec, store, Ledger(store))
    except LedgerError as e:
        raise _fail(str(e)) from None
    todo = [p for p in plans if p.state in ("submit", "resubmit")]
    try:
        ests = est_cells(todo, _level(optimization_level))
    except BackendError as e:
        raise _fail(str(e)) from None
    t = Table(title=f"QPU estimate of grid {spec.name}")
    for col in ("cell", "model", "method", "shots", "backend", "2q gates", "depth", "circuits", "total shots",
                "jobs", "QPU s (est)"):
        t.add_column(col, justify="right" if col not in ("cell", "model", "method", "backend") else "left")
    for e in ests:
        c = e.cfg
        t.add_row(e.cell_id, c.model, c.method, str(c.eval_shots), c.backend, str(e.two_qubit_gates), str(e.depth),
                  f"{e.circuits:,}", f"{e.shots:,}", str(e.jobs), f"{e.qpu_seconds:.1f}")
    Console(width=160).print(t, markup=False)
    total = sum(e.qpu_seconds for e in ests)
    from .hardware import estimate_target

    for b in sorted({e.cfg.backend for e in ests}):
        if estimate_target(b) != b:
            print(f"note: no IBM credentials, so {b} was transpiled against its local stand-in {estimate_target(b)}")
    print(f"total: {len(ests)} cells to submit, {sum(e.circuits for e in ests):,} circuits, "
          f"{sum(e.shots for e in ests):,} shots, estimated {total:.0f} QPU seconds ({total / 60:.1f} min); "
          f"{sum(p.state == 'ok' for p in plans)} cells stored, {sum(p.state == 'pending' for p in plans)} in flight")


@app.command(epilog=examples("qmu hw submit grids/hardware.yaml --max-qpu-seconds 1200",
                             "qmu hw submit grids/hardware.yaml --max-qpu-seconds 1200 --wait # and collect"))
def submit(
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="grid spec YAML"),
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    max_qpu_seconds: float = typer.Option(60.0, min=0.0, help="QPU budget: cells are admitted in grid order "
                                                              "while their estimates fit; the rest are stored "
                                                              "as budget_skipped"),
    optimization_level: Optional[int] = typer.Option(None, help=LEVEL_HELP),
    tag: List[str] = typer.Option([], "--tag", help="extra job tag (repeatable)"),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="wait for the jobs and collect the rows"),
) -> None:
    """Submit the evaluation jobs of a grid's cells (those neither stored nor in flight)."""
    from workloads.quantum.backends import BackendError, CannotConnect, MissingCredentials

    from .hardware import BudgetExceeded, LedgerError, submit as submit_cells

    spec = _load(grid)
    level = _level(optimization_level)
    store = _store(results)
    try:
        s = submit_cells(spec, store, max_qpu_seconds=max_qpu_seconds, level=level, tags=tuple(tag))
    except (MissingCredentials, CannotConnect, BudgetExceeded, LedgerError) as e:
        raise _fail(str(e)) from None
    except BackendError as e:
        raise _fail(str(e), 1) from None
    skipped = (f"; {s.cells_budget_skipped} cells budget_skipped (their estimates are in the error column; "
               "submit again with a larger --max-qpu-seconds)") if s.cells_budget_skipped else ""
    print(f"{spec.name}: submitted {len(s.submitted_jobs)} jobs for {s.cells_submitted} cells "
          f"(estimated {s.qpu_seconds_est:.1f} QPU s of {max_qpu_seconds:g}); {s.cells_skipped_ok} cells already "
          f"stored, {s.cells_pending} in flight{skipped}; ledger: {results}/hw", flush=True)
    if wait:
        _collect_loop(store, spec.name, poll=30.0)


def _collect_loop(store, grid: Optional[str], poll: float, once: bool = False) -> None:
    import time

    from workloads.quantum.backends import BackendError, CannotConnect, MissingCredentials

    from .hardware import LedgerError, collect as collect_cells

    failed = 0
    while True:
        try:
            c = collect_cells(store, grid)
        except (MissingCredentials, CannotConnect, LedgerError) as e:
            raise _fail(str(e)) from None
        except BackendError as e:
            raise _fail(str(e), 1) from None
        failed += len(c.failed)
        print(f"collected: {len(c.stored)} stored, {len(c.failed)} failed, {len(c.pending)} pending", flush=True)
        if once or not c.pending:
            break
        time.sleep(poll)
    if failed:
        raise typer.Exit(1)


@app.command(epilog=examples("qmu hw collect", "qmu hw collect --wait --poll 60"))
def collect(
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    grid: Optional[str] = typer.Option(None, help="only this grid"),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="poll until no job is pending"),
    poll: float = typer.Option(30.0, help="seconds between polls with --wait"),
) -> None:
    """Fetch finished jobs and store their cells' rows (exit 1 if a cell failed)."""
    _collect_loop(_store(results, need_ledger=True), grid, poll, once=not wait)


@app.command(epilog=examples("qmu hw status", "qmu hw status --no-refresh # the ledger only, no service call"))
def status(
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    grid: Optional[str] = typer.Option(None, help="only this grid"),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="ask the service about pending jobs"),
) -> None:
    """Pending, done and failed jobs of the ledger, with reasons and QPU seconds."""
    from workloads.quantum.backends import BackendError

    from .hardware import LedgerError, job_table

    try:
        rows = job_table(_store(results, need_ledger=True), grid, refresh=refresh)
    except LedgerError as e:
        raise _fail(str(e)) from None
    except BackendError as e:
        raise _fail(str(e), 1) from None
    if not rows:
        raise _fail(f"--grid {grid}: no hardware jobs of that grid under {results}")
    t = Table(title=f"hardware jobs: {results}")
    for col in ("job id", "grid", "stage", "backend", "cells", "circuits", "shots", "status", "QPU s", "est s",
                "submitted", "reason"):
        t.add_column(col, overflow="fold")
    for r in rows:
        q = r.get("qpu_seconds")
        t.add_row(r["job_id"], r["grid"], r["stage"], r["backend"], str(len(r["cells"])), str(sum(r["circuits"])),
                  str(r["shots"]), r["status"], "-" if q is None else f"{q:.1f}", f"{r['qpu_seconds_est']:.1f}",
                  r["submitted_at"][:19], r.get("reason") or "")
    Console(width=200).print(t, markup=False)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pending", "done", "failed")}
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
