"""The `qmu` command line. Exit codes: 0 ok, 1 some cells (or hardware jobs) failed, 2 bad input or no store.

The grid format, the metrics and the result columns are described in docs/ (grid.md, metrics.md, results.md).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional, Tuple

import typer
from rich.console import Console
from rich.table import Table

from .identity import STAGES
from .hw_cli import app as hw_app
from .loading import WORKLOAD, fingerprint, load_grid, open_store, where
from .ui import Interrupted, OneLineErrors, examples, fail, fmt_duration, note

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    context_settings=CONTEXT, rich_markup_mode=None,
    help="qmu-bench: membership leakage and unlearning of quantum neural networks, at scale.\n\n"
         "Grid format, metrics, methods and result columns: docs/ in the project (grid.md, metrics.md, "
         "methods.md, results.md). Start with `qmu run grids/smoke.yaml`, then `qmu report`.",
    epilog=examples("qmu run grids/smoke.yaml && qmu report --grid smoke # the main job",
                    "qmu run grids/paper.yaml --dry-run # what would run, and the cost",
                    "qmu status # grids in ./results",
                    "qmu query \"select method, avg(mia_auc) from cells group by method\"",
                    "qmu hw estimate grids/hardware.yaml # QPU seconds before submitting"))
app.add_typer(hw_app, name="hw", short_help="Hardware jobs through a ledger and a QPU budget.")
RESULTS_HELP = "results root: a local directory or a pyarrow filesystem URI (s3://..., gs://...)"


def _process_start() -> float:
    """When this process started (so the summary's wall time matches `time qmu run ...`). On Linux from
    /proc in clock ticks: psutil's create_time adds the boot time, which /proc gives in whole seconds, and
    read 0.2 s late."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def _make_root(store: Any) -> None:
    """Create a local results root before any work, so that an unwritable path fails with one line."""
    if store.local:
        try:
            os.makedirs(store.base, exist_ok=True)
        except OSError as e:
            raise fail(f"--results {store.base}: cannot create it ({e.strerror or e}); choose a writable "
                       "directory") from None


def _manifest(store: Any, grid: str) -> dict[str, Any] | None:
    import json

    try:
        return store.manifest(grid)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise fail(f"{store.manifest_path(grid)}: corrupt manifest ({e}); delete it, and `qmu run` of "
                   f"grid {grid!r} writes it again") from None


# ------------------------------------------------------------------------------------------------- run
@app.command(epilog=examples(
    "qmu run grids/smoke.yaml # local Ray, results in ./results",
    "qmu run grids/paper.yaml --dry-run # cells, stages, cost estimate; runs nothing",
    "qmu run grids/paper.yaml --address auto -r s3://BUCKET/qmu # on a Ray cluster",
    "qmu run grids/hardware.yaml --max-qpu-seconds 1200 # ibm: backends, QPU budget"))
def run(
    grid: Path = typer.Argument(..., metavar="GRID.yaml", help="grid spec YAML (format: docs/grid.md)"),
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    address: Optional[str] = typer.Option(None, help="join a running Ray cluster: 'auto' or HOST:PORT"),
    workers: Optional[int] = typer.Option(None, min=1, help="worker actors (default: one per CPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print cells, stages and a cost estimate; run nothing"),
    max_qpu_seconds: Optional[float] = typer.Option(
        None, min=0.0, help="QPU budget for ibm: backends (required for them): cells go through the same job "
                            "ledger as `qmu hw submit`; cells past the budget are stored as budget_skipped"),
    max_retries: int = typer.Option(2, min=0, help="retries of a stage whose worker died"),
) -> None:
    """Run or resume a grid, with progress. A finished grid returns at once ("nothing to do")."""
    t0 = _process_start()
    store = open_store(results)
    if not dry_run and _already_done(grid, store, t0):
        return
    spec = load_grid(grid, WORKLOAD)  # a bad grid exits here with its one error line, before any progress line
    print(f"qmu run {grid}: planning", flush=True)
    from workloads.quantum.backends import kind as backend_kind

    if any(backend_kind(b).HARDWARE for b in spec.axes["backend"]):
        return _run_on_hardware(spec, grid, results, max_qpu_seconds, dry_run)
    if max_qpu_seconds is not None:
        note("note: --max-qpu-seconds applies to ibm: backends only; this grid has none")
    if dry_run:
        _dry_run(spec, store, workers)
        return
    _check_address(address)
    _make_root(store)
    from .progress import make_progress
    from .runner import ClusterMismatch, run_grid

    progress = make_progress()
    try:
        summary = run_grid(spec, store, workers=workers, impl=WORKLOAD, progress=progress,
                           max_retries=max_retries, address=address)
    except ConnectionError as e:  # Ray could not be started or joined
        raise fail(f"--address {address or '(local)'}: cannot start or join Ray: {str(e).splitlines()[0]}") from None
    except ClusterMismatch as e:
        raise fail(f"--address {address}: {e}; run on a cluster started from this checkout (`ray start` in its "
                   "environment), or without --address for a local Ray") from None
    except KeyboardInterrupt:
        progress.stop()
        raise Interrupted(f"{_stored(store, spec.name)} cells stored; re-run to resume: qmu run {grid}"
                          + (f" --results {results}" if results != "results" else "")) from None
    _summary(spec.name, summary, store, t0)
    if summary.cells_failed:
        raise typer.Exit(1)


def _stored(store: Any, grid: str) -> str:
    """'13 of 20': the grid's cells stored as ok, of those in its manifest."""
    cells = (store.manifest(grid) or {}).get("cells") or []
    statuses = store.cell_statuses(grid)
    return f"{sum(statuses.get(c) == 'ok' for c in cells)} of {len(cells)}"


def _already_done(grid: Path, store: Any, t0: float) -> bool:
    """True (and a one-line summary) when the store holds every cell of this exact grid file and code: no
    workload import, no Ray. Anything unusual falls through to the full path, which checks it properly."""
    import yaml

    try:
        data = grid.read_bytes()
        doc = yaml.safe_load(data)
        name = doc["name"]
        manifest = store.manifest(str(name))
    except Exception:  # noqa: BLE001 -- unreadable or unusual: the full path reports it
        return False
    if doc.get("models"):  # circuit models: their builders' code is not in the fingerprint; the plan hashes it
        return False
    if not manifest or manifest.get("fingerprint") != fingerprint(data, WORKLOAD):
        return False
    statuses = store.cell_statuses(name)
    cells = manifest.get("cells") or []
    if not all(statuses.get(c) == "ok" for c in cells):
        return False
    print(f"{name}: nothing to do: all {len(cells)} cells are stored | wall {fmt_duration(time.time() - t0)} | "
          f"results: {where(store)}")
    return True


def _check_address(address: str | None) -> None:
    """A HOST:PORT that does not answer is bad input; found in seconds (Ray itself retries for minutes)."""
    if address in (None, "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise fail(f"--address {address!r}: expected 'auto' or HOST:PORT of a Ray head (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise fail(f"--address {address}: no Ray head answers there ({e.strerror or e}); start one with "
                   "`ray start --head`, or use --address auto on a node of a running cluster") from None


def _summary(name: str, s: Any, store: Any, t0: float) -> None:
    ran = ", ".join(f"{k} {v}" for k, v in sorted(s.stages_run.items())) or "none"
    reused = ", ".join(f"{k} {v}" for k, v in sorted(s.stages_reused.items())) or "none"
    done = "nothing to do" if s.cells_ok + s.cells_failed == 0 else \
        f"{s.cells_ok} cells done, {s.cells_failed} failed"
    nodes = f" on {len(s.hosts)} node(s)" if s.hosts else ""
    print(f"{name}: {done}, {s.cells_skipped} reused of {s.cells_total} | stages run: {ran}{nodes} | "
          f"reused: {reused} | retries {s.retries} | wall {fmt_duration(time.time() - t0)} | "
          f"results: {where(store)}")
    for cid, error in s.failures[:10]:
        note(f"failed {cid}: {error.splitlines()[0] if error else ''}")


def _run_on_hardware(spec: Any, grid: Path, results: str, max_qpu_seconds: float | None, dry_run: bool) -> None:
    """ibm: backends spend QPU time: only through the ledger and a budget, as `qmu hw submit --wait`."""
    from . import hw_cli

    from workloads.quantum.backends import kind as backend_kind

    ibm = next(b for b in spec.axes["backend"] if backend_kind(b).HARDWARE)
    sim = next((b for b in spec.axes["backend"] if not backend_kind(b).QISKIT), None)
    if sim is not None:
        raise fail(f"{grid}: grid.backend mixes {sim} with {ibm}; put the hardware backends in a grid of their own "
                   "(torch cells run with `qmu run`, hardware cells through the QPU budget)")
    if dry_run:
        return hw_cli.estimate(grid=grid, results=results, optimization_level=None)
    if max_qpu_seconds is None:
        raise fail(f"{grid}: backend {ibm} runs on IBM hardware and spends QPU time: give --max-qpu-seconds N "
                   f"(jobs go through the ledger, as `qmu hw submit {grid} --max-qpu-seconds N` does); "
                   f"`qmu hw estimate {grid}` prints the estimate")
    hw_cli.submit(grid=grid, results=results, max_qpu_seconds=max_qpu_seconds, optimization_level=None, tag=[],
                  wait=True)


def _dry_run(spec: Any, store: Any, workers: int | None) -> None:
    """Counts and estimated cost of what `run` would do; reads the store, writes nothing."""
    from .estimate import plan_estimate
    from .runner import plan_grid

    plan, all_ids, cv = plan_grid(spec, store, WORKLOAD)
    n = workers or os.cpu_count() or 1
    est = plan_estimate(plan, store.has_artifact, n)
    print(f"{spec.name}: {len(all_ids)} cells, {len(all_ids) - len(plan.cells)} already done (code {cv})")
    t = Table()
    for col in ("stage", "to run", "reused"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for kind in STAGES:
        if kind in ("train", "unlearn", "attack", "evaluate") or plan.count(kind):  # optional kinds where used
            t.add_row(kind, str(est.stages.get(kind, 0)), str(est.reused.get(kind, 0)))
    Console().print(t)
    print(f"estimate: {est.cost.circuits:,.0f} circuit executions, {est.cost.shots:,.0f} shots, "
          f"{est.cost.seconds / 3600:.2f} CPU-hours, about {fmt_duration(est.wall_seconds)} on {n} worker(s)")
    print("nothing was run or written (--dry-run)")


# ------------------------------------------------------------------------------------------------- status
@app.command(epilog=examples("qmu status", "qmu status --results s3://BUCKET/qmu",
                             "qmu status --watch # follow a running grid from another terminal"))
def status(
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh until no cell is pending (Ctrl-C stops "
                                                              "watching, not the run)"),
    interval: float = typer.Option(5.0, min=0.5, help="seconds between refreshes with --watch"),
) -> None:
    """Done / failed / budget_skipped / pending cells per grid."""
    store = open_store(results, must_exist=True)
    if not watch:
        Console(width=120).print(_status_table(store)[0])
        return
    first, t_first = None, time.time()
    console = Console(width=120)
    try:
        while True:
            table, finished, pending = _status_table(store)
            first = finished if first is None else first
            rate = (finished - first) / max(1e-9, time.time() - t_first)
            eta = f"; about {fmt_duration(pending / rate)} to go at this rate" if rate > 0 and pending else ""
            console.print(table)
            print(f"[{time.strftime('%H:%M:%S')}] {finished - first} cells finished while watching, "
                  f"{pending} pending{eta}", flush=True)
            if not pending:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _status_table(store: Any) -> tuple[Table, int, int]:
    """(table, cells finished, cells pending) over every grid of the store."""
    from .store import STATUSES

    t = Table(title=f"results: {where(store)}")
    for col in ("grid", "cells", *STATUSES, "pending"):
        t.add_column(col, justify="left" if col == "grid" else "right")
    finished = pending = 0
    for g in store.grids():
        statuses = store.cell_statuses(g)
        manifest = _manifest(store, g)
        ids = manifest["cells"] if manifest else list(statuses)
        counts = {s: sum(1 for c in ids if statuses.get(c) == s) for s in STATUSES}
        left = len(ids) - sum(counts.values())
        finished, pending = finished + sum(counts.values()), pending + left
        t.add_row(g, str(len(ids)), *(str(counts[s]) for s in STATUSES), str(left))
    return t, finished, pending


# ------------------------------------------------------------------------------------------------ compact
@app.command(short_help="Fold a grid's result files into a few large Parquet files.",
             epilog=examples("qmu compact", "qmu compact --results s3://BUCKET/qmu --grid paper"))
def compact(
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    grid: Optional[str] = typer.Option(None, "--grid", help="only this grid (default: every grid in the store)"),
) -> None:
    """Fold a grid's result files into a few large sorted Parquet files (fast queries at scale; `qmu run`
    does this itself after a run that left many files)."""
    store = open_store(results, must_exist=True)
    grids = store.grids()
    if grid is not None and grid not in grids:
        raise fail(f"--grid {grid!r}: no such grid under {where(store)} (grids: {', '.join(grids)})")
    for g in [grid] if grid else grids:
        info = store.compact(g)
        print(f"{g}: {info['cells']} cells compacted, {info['absorbed']} pending file(s) folded in")


# ------------------------------------------------------------------------------------------------- query
@app.command(epilog=examples(
    "qmu query \"select method, avg(mia_success) from cells group by 1\"",
    "qmu query \"select * from cells where status <> 'ok'\" -f csv > not_ok.csv",
    "qmu query \"describe cells\" # the columns (docs/results.md explains them)"))
def query(
    sql: str = typer.Argument(..., metavar="SQL", help="one DuckDB SELECT over the views `cells` and `examples`"),
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Run one read-only DuckDB SELECT over the result store.

    Only one SELECT (CTEs and set operations included) or EXPLAIN of one runs: COPY, ATTACH, INSTALL, LOAD,
    SET, EXPLAIN ANALYZE and a write nested in a CTE exit 2. The connection opens the store's own files and
    nothing else."""
    from .sql import QueryError, check_read_only, read_only_query

    if format not in ("table", "csv", "json"):
        raise fail(f"--format: unknown format {format!r}; choose table, csv or json")
    try:
        check_read_only(sql)  # before the store is opened: a refused statement touches nothing
        df = read_only_query(open_store(results, must_exist=True), sql)
    except QueryError as e:
        raise fail(f"query: {e}") from None
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
        Console(width=max(120, 14 * len(df.columns))).print(t, markup=False)
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


# ------------------------------------------------------------------------------------------------- report
@app.command(short_help="Build report.html, report.md and figures from the result store.", epilog=examples(
    "qmu report # every grid under ./results",
    "qmu report --grid smoke --out /tmp/smoke-report",
    "qmu report --compare paper shots # two grids (or backends) side by side",
    "qmu report --grid paper --replication # the study's findings, reproduced or not"))
def report(
    results: str = typer.Option("results", "--results", "-r", help=RESULTS_HELP),
    out: Optional[str] = typer.Option(None, help="output directory (default: RESULTS/report/GRID, or "
                                                 "./report/GRID for a remote store; 'all' for every grid)"),
    grid: Optional[str] = typer.Option(None, help="only this grid (default: every grid in the store)"),
    compare: Optional[Tuple[str, str]] = typer.Option(None, metavar="A B",
                                                      help="two grids (or backends) side by side"),
    replication: bool = typer.Option(False, "--replication",
                                     help="open with the study's findings, each marked reproduced / partly / not"),
) -> None:
    """Build report.html, report.md and figures/*.png from the result store."""
    store = open_store(results, must_exist=True)
    grids = store.grids()
    if grid is not None and grid not in grids:
        raise fail(f"--grid {grid!r}: no such grid under {where(store)}; grids there: {', '.join(grids)}")
    for g in grids:  # a corrupt manifest is named here, not deep inside the report
        _manifest(store, g)
    if out is None:  # one folder per grid, beside the results when they are local; remote stores: ./report
        name = grid or (grids[0] if len(grids) == 1 else "all")
        name += f"-{compare[0]}-vs-{compare[1]}" if compare and all(compare) else ""
        out = f"report/{name}" if "://" in results else f"{results.rstrip('/')}/report/{name}"
    from reports import build  # lazy: every other command works without the plotting stack

    problem = build.out_problem(Path(out).absolute())
    if problem:
        raise fail(f"--out {out}: {problem}")
    argv = ["--results", results, "--out", out]
    argv += ["--grid", grid] if grid else []
    argv += ["--compare", *compare] if compare and all(compare) else []
    argv += ["--replication"] if replication else []
    try:
        rc = build.main(argv)
    except KeyboardInterrupt:
        raise Interrupted(f"{out} is as it was (the new report is built beside it, then swapped in); re-run "
                          "`qmu report` to build it") from None
    raise typer.Exit(rc if isinstance(rc, int) else 0)


# ------------------------------------------------------------------------------------------------- bench
@app.command(short_help="Print the simulator, attack and harness benchmark ratios.",
             epilog=examples("qmu bench", "qmu bench simulator"))
def bench(
    which: str = typer.Argument("all", help="all | simulator | attack | harness"),
) -> None:
    """Print the simulator, attack-training and harness benchmark ratios (runs benchmarks/*.py)."""
    import subprocess

    scripts = {"simulator": "bench_simulator.py", "attack": "bench_attack.py", "harness": "bench_harness.py"}
    if which not in (*scripts, "all"):
        raise fail(f"bench: unknown benchmark {which!r}; choose all, {', '.join(scripts)}")
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    rc = 0
    for name, script in scripts.items():
        if which not in ("all", name):
            continue
        path = root / script
        if not path.exists():
            raise fail(f"bench: {path} not found (benchmarks ship with a source checkout)")
        print(f"== {script}", flush=True)
        rc = max(rc, subprocess.call([sys.executable, str(path)], cwd=root.parent))
    raise typer.Exit(min(rc, 2))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
