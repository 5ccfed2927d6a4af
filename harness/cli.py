"""The `qmu` command line (README: Commands; definitions in docs/). Exit codes: 0 ok, 1 some cells failed, 2 bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .grid_spec import GridError, load_grid
from .hw_cli import app as hw_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="qmu-bench: membership leakage and unlearning of quantum neural networks, at scale.")
app.add_typer(hw_app, name="hw")
err = Console(stderr=True)
RESULTS_HELP = "results root: a local directory or a pyarrow filesystem URI (s3://..., gs://...)"


def _bad_input(msg: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(2)


@app.command()
def run(
    grid: Path = typer.Argument(..., help="grid spec YAML"),
    results: str = typer.Option("results", help=RESULTS_HELP),
    address: Optional[str] = typer.Option(None, help="join a running Ray cluster ('auto' or HOST:PORT)"),
    workers: Optional[int] = typer.Option(None, min=1, help="worker actors (default: one per CPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print cells, stages and a cost estimate; run nothing"),
    impl: str = typer.Option("workloads.cell", hidden=True, help="workload module (tests, benchmarks)"),
    max_retries: int = typer.Option(2, hidden=True, min=0, help="retries of a stage whose worker died"),
) -> None:
    """Run or resume a grid, with progress."""
    try:
        spec = load_grid(grid, impl)
    except GridError as e:
        raise _bad_input(str(e)) from None
    if not dry_run:
        _require_credentials(grid, spec)
    from .store import ResultStore

    store = ResultStore(results)
    if dry_run:
        _dry_run(spec, store, impl, workers)
        return
    from .progress import make_progress
    from .runner import run_grid

    summary = run_grid(spec, store, workers=workers, impl=impl, progress=make_progress(), max_retries=max_retries,
                       address=address)
    ran = ", ".join(f"{k} {v}" for k, v in sorted(summary.stages_run.items())) or "none"
    reused = ", ".join(f"{k} {v}" for k, v in sorted(summary.stages_reused.items())) or "none"
    print(f"{spec.name}: {summary.cells_ok} ok, {summary.cells_failed} failed, {summary.cells_skipped} already done "
          f"of {summary.cells_total} cells | stages run: {ran} | reused: {reused} | retries {summary.retries} | "
          f"{len(summary.hosts)} node(s) | {summary.wall_seconds:.1f} s | results: {results}")
    for cid, error in summary.failures[:10]:
        err.print(f"failed {cid}: {error.splitlines()[0]}", highlight=False, markup=False)
    if summary.cells_failed:
        raise typer.Exit(1)


def _require_credentials(path: Path, spec) -> None:
    """An ibm: backend without credentials is bad input: fail before any work (the token is never shown)."""
    from workloads.backends import MissingCredentials, require_credentials

    for backend in spec.axes.get("backend", ()):
        try:
            require_credentials(backend)
        except MissingCredentials as e:
            raise _bad_input(f"{path}: backend: {e}") from None


def _dry_run(spec, store, impl: str, workers: int | None) -> None:
    """Counts and estimated cost of what `run` would do; reads the store, writes nothing."""
    import os

    from .estimate import plan_estimate
    from .runner import plan_grid

    plan, all_ids, cv = plan_grid(spec, store, impl)
    n = workers or os.cpu_count() or 1
    est = plan_estimate(plan, store.has_artifact, n)
    print(f"{spec.name}: {len(all_ids)} cells, {len(all_ids) - len(plan.cells)} already done (code {cv})")
    t = Table()
    for col in ("stage", "to run", "reused"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for kind in ("train", "unlearn", "attack", "evaluate"):
        t.add_row(kind, str(est.stages.get(kind, 0)), str(est.reused.get(kind, 0)))
    Console().print(t)
    print(f"estimate: {est.cost.circuits:,.0f} circuit executions, {est.cost.shots:,.0f} shots, "
          f"{est.cost.seconds / 3600:.2f} CPU-hours, about {_fmt_s(est.wall_seconds)} on {n} worker(s)")
    print("nothing was run or written (--dry-run)")


def _fmt_s(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


@app.command()
def status(results: str = typer.Option("results", help=RESULTS_HELP)) -> None:
    """Done / pending / failed cells per grid."""
    from .store import ResultStore

    store = ResultStore(results)
    t = Table(title=f"results: {results}")
    for col in ("grid", "cells", "ok", "failed", "budget_skipped", "pending"):
        t.add_column(col, justify="left" if col == "grid" else "right")
    grids = store.grids()
    for g in grids:
        statuses = store.cell_statuses(g)
        manifest = store.manifest(g)
        ids = manifest["cells"] if manifest else list(statuses)
        counts = {s: sum(1 for c in ids if statuses.get(c) == s) for s in ("ok", "failed", "budget_skipped")}
        pending = len(ids) - sum(counts.values())
        t.add_row(g, str(len(ids)), str(counts["ok"]), str(counts["failed"]), str(counts["budget_skipped"]),
                  str(pending))
    if not grids:
        print(f"no results under {results}")
        return
    Console(width=120).print(t)


@app.command()
def query(
    sql: str = typer.Argument(..., help="DuckDB SQL over the views `cells` and `examples`"),
    results: str = typer.Option("results", help=RESULTS_HELP),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Run DuckDB SQL over the result store."""
    import duckdb

    from .store import ResultStore, connect_duckdb

    if format not in ("table", "csv", "json"):
        raise _bad_input(f"--format: unknown format {format!r}; choose table, csv or json")
    con = connect_duckdb(ResultStore(results))
    try:
        df = con.execute(sql).df()
    except duckdb.Error as e:
        raise _bad_input(f"query: {e}") from None
    if format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif format == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso") + "\n")
    else:
        t = Table(show_lines=False)
        for c in df.columns:
            t.add_column(str(c), overflow="fold")
        for rec in df.itertuples(index=False):
            t.add_row(*(_cell_text(v) for v in rec))
        Console(width=max(120, 14 * len(df.columns))).print(t)
        print(f"({len(df)} row{'s' if len(df) != 1 else ''})")


def _cell_text(v: object) -> str:
    """Table cell: NULL for missing, 6 significant digits for floats (csv/json keep full precision)."""
    import pandas as pd

    try:
        if pd.isna(v):
            return "NULL"
    except (TypeError, ValueError):  # lists and arrays
        pass
    return f"{v:.6g}" if isinstance(v, float) else str(v)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report(
    ctx: typer.Context,
    results: str = typer.Option("results", help=RESULTS_HELP),
    out: Optional[str] = typer.Option(None, help="output directory (default: RESULTS/report)"),
) -> None:
    """Build report.html, report.md and figures/*.png from the result store (extra options go to
    `reports.build`, e.g. --grid NAME, --compare A B, --replication)."""
    if out is None:  # beside the results when they are local; remote stores report to ./report
        out = "report" if "://" in results else f"{results.rstrip('/')}/report"
    try:
        from reports import build  # lazy: reports is optional for every other command
    except ImportError:
        err.print("qmu report: the reports package has no `reports.build` module yet")
        raise typer.Exit(1) from None
    if not hasattr(build, "main"):
        err.print("qmu report: reports.build provides no main(argv)")
        raise typer.Exit(1)
    rc = build.main(["--results", results, "--out", out, *ctx.args])
    raise typer.Exit(rc if isinstance(rc, int) else 0)


@app.command()
def bench(
    which: str = typer.Argument("all", help="all | simulator | harness"),
) -> None:
    """Print the simulator and harness benchmark ratios (runs benchmarks/*.py)."""
    scripts = {"simulator": "bench_simulator.py", "harness": "bench_harness.py"}
    if which not in (*scripts, "all"):
        raise _bad_input(f"bench: unknown benchmark {which!r}; choose all, simulator or harness")
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    rc = 0
    for name, script in scripts.items():
        if which not in ("all", name):
            continue
        path = root / script
        if not path.exists():
            err.print(f"qmu bench: {path} not found (benchmarks ship with a source checkout)")
            rc = max(rc, 2)
            continue
        print(f"== {script}", flush=True)
        rc = max(rc, subprocess.call([sys.executable, str(path)], cwd=root.parent))
    raise typer.Exit(min(rc, 2))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
