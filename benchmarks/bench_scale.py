"""Scale simulation: N trivial cells on a multi-node Ray cluster (`ray.cluster_utils.Cluster`, one machine),
through the real driver and result store, at N = 1k, 10k, 100k (up to --cells).

For each N, in a fresh results root, it prints:
- stages/s end to end (planning and actor start-up included) and in steady state (from the first dispatch);
- the driver's CPU seconds and its stage capacity (stages per driver CPU second: the rate a driver on its own
  core sustains when the workers are on other machines; on one machine they share its cores);
- the driver's peak memory (each N runs in its own driver process);
- store write time (the driver's group commits) and `qmu compact` time;
- `qmu status` before and after compaction, `qmu query` (a grouped aggregate) through the real CLI, and a
  report-style query (`reports.queries`: load, per-cell intervals, the headline table) after it;
- with --report N: `qmu report` on the N-cell grid.

Usage: python benchmarks/bench_scale.py [--cells 100000] [--nodes 3] [--cpus-per-node 1] [--report 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (1_000, 10_000, 100_000)
QUERY = ("select method, eval_shots, count(*) n, avg(mia_success) mia, avg(acc_test_retain) acc "
         "from cells where status = 'ok' group by all order by all")


def one(n: int, address: str, results: str) -> dict:
    """Run n trivial cells into `results` from this process (the driver) and measure it."""
    from benchmarks.bench_harness import trivial_spec
    from harness import store as store_mod
    from harness.runner import connect, run_grid

    write_s = [0.0]
    real = store_mod.ResultStore._write_many

    def timed(self, items):  # the driver's time in store writes (group commits)
        t = time.perf_counter()
        try:
            return real(self, items)
        finally:
            write_s[0] += time.perf_counter() - t

    store_mod.ResultStore._write_many = timed
    connect(address, None if address else 2)
    spec = trivial_spec(n)
    store = store_mod.ResultStore(results)
    cpu0, t0 = time.process_time(), time.perf_counter()
    s = run_grid(spec, store, impl="tests.support.trivial", compact=False)
    run_s, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert s.cells_ok == spec.n_cells, s.failures[:3]
    stages = sum(s.stages_run.values())
    out = {"cells": spec.n_cells, "stages": stages, "run_s": run_s, "startup_s": s.startup_seconds,
           "driver_cpu_s": cpu, "write_s": write_s[0], "peak_rss_mb": _peak_mb(), "nodes": len(s.hosts),
           "pending_files": len(store.grid_files(spec.name).pending_cells)}
    return out


def store_only(n: int, results: str) -> dict:
    """The store half without Ray: n trivial cells committed in the driver's group writes (2,000 cells per
    file), with 4 example rows each, then compacted; the same rows `run_grid` would write."""
    from benchmarks.bench_harness import trivial_spec
    from tests.support import trivial
    from harness.identity import cell_id, config_dict
    from harness.store import ResultStore, examples_arrow
    import pandas as pd

    spec = trivial_spec(n)
    store = ResultStore(results)
    cfgs = spec.cells(trivial.CellConfig)
    ids = [cell_id(spec.name, c) for c in cfgs]
    store.write_manifest(spec.name, {"grid": spec.name, "cells": ids})
    ex = examples_arrow(pd.DataFrame({"split": ["train_forget"] * 4, "sample_index": range(4), "label": [4] * 4,
                                      "prediction": [4] * 4, "loss": [0.1] * 4, "attack_score": [0.5] * 4}))
    t0 = time.perf_counter()
    for i in range(0, n, 2000):
        rows = []
        for cid, c in zip(ids[i:i + 2000], cfgs[i:i + 2000]):
            d = config_dict(c)
            rows.append({k: d[k] for k in ("model", "forget", "method", "train_shots", "unlearn_shots",
                                           "eval_shots", "seed", "backend")}
                        | {"cell_id": cid, "status": "ok", "mia_success": 0.5, "acc_test_retain": 0.9,
                           "params": "{}", "train_key": "k" * 24, "host": "h"})
        store.write_batch(spec.name, rows, [ex] * len(rows))
    write_s = time.perf_counter() - t0
    return {"cells": n, "write_s": write_s, "pending_files": len(store.grid_files(spec.name).pending_cells)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cli(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"qmu {' '.join(args)}: {p.stderr[-2000:]}")
    return dt, p.stdout


def _report_query(results: str) -> float:
    """Seconds of the report's first queries (load, per-cell intervals, the headline table); imports excluded."""
    from reports import queries as q
    from scipy import stats  # noqa: F401 -- the t intervals import it on first use (about 1 s); imports excluded

    t0 = time.perf_counter()
    s = q.connect(results)
    q.headline_table(s, "bench", q.reference_slice(s, "bench"))
    s.close()
    return time.perf_counter() - t0


def _cluster(cpus: int, tries: int = 3):
    """The head node; on a loaded machine a raylet can miss Ray's 30 s start-up deadline, so try again."""
    from ray.cluster_utils import Cluster

    for i in range(tries):
        try:
            return Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
        except Exception:  # noqa: BLE001 -- Ray raises a bare Exception for the start-up timeout
            if i == tries - 1:
                raise
            time.sleep(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000, help="largest N (the curve stops there)")
    ap.add_argument("--sizes", default=None, help="comma-separated N values (default 1000,10000,100000 up to --cells)")
    ap.add_argument("--nodes", type=int, default=3,
                    help="Ray nodes of the simulated cluster (0: each driver starts a plain local Ray instead)")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--report", type=int, default=0, help="also time `qmu report` at this N (one of the sizes)")
    ap.add_argument("--dir", default=None, help="where the results roots go (default: a temp dir, removed)")
    ap.add_argument("--store-only", action="store_true",
                    help="no Ray: write N cells as the driver's group commits would, then time compaction and queries")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--address", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--results", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # the driver process of one size
        print(json.dumps(one(args.one, args.address, args.results)))
        return 0
    if args.store_only:
        return _store_curve(args)

    import ray

    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [n for n in SIZES if n <= args.cells]
    if not args.sizes and args.cells not in sizes:
        sizes.append(args.cells)
    cluster = _cluster(args.cpus_per_node) if args.nodes else None
    if cluster is not None:
        # The drivers here get the cluster's address explicitly; `qmu run` without --address starts its own
        # local Ray (address "local"), so it never joins this one.
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=args.cpus_per_node)
        cluster.wait_for_nodes()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; cluster: {args.nodes} Ray nodes x "
          f"{args.cpus_per_node} CPU (0: a local Ray per driver), ray {ray.__version__}", flush=True)
    base = Path(args.dir or tempfile.mkdtemp(prefix="qmu-scale-"))
    rows = []
    try:
        for n in sizes:
            results = str(base / f"n{n}")
            shutil.rmtree(results, ignore_errors=True)
            addr = ["--address", cluster.address] if cluster else []
            p = subprocess.run([sys.executable, __file__, "--one", str(n), *addr, "--results", results], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            if p.returncode != 0:
                print(p.stderr[-3000:])
                return 1
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["status_pending_s"], _ = _cli("status", "--results", results)
            r["compact_s"], _ = _cli("compact", "--results", results)
            r["status_s"], _ = _cli("status", "--results", results)
            r["query_s"], _ = _cli("query", QUERY, "--results", results, "--format", "csv")
            r["report_query_s"] = _report_query(results)
            if args.report == n:
                r["report_s"], _ = _cli("report", "--results", results, "--out", str(base / f"report{n}"))
            rows.append(r)
            _print_row(r)
    finally:
        if cluster is not None:
            cluster.shutdown()
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    _print_table(rows)
    return 0


def _store_curve(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [n for n in SIZES if n <= args.cells]
    base = Path(args.dir or tempfile.mkdtemp(prefix="qmu-scale-store-"))
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; store only (no Ray)", flush=True)
    try:
        for n in sizes:
            results = str(base / f"n{n}")
            shutil.rmtree(results, ignore_errors=True)
            r = store_only(n, results)
            r["status_pending_s"], _ = _cli("status", "--results", results)
            r["compact_s"], _ = _cli("compact", "--results", results)
            r["status_s"], _ = _cli("status", "--results", results)
            r["query_s"], _ = _cli("query", QUERY, "--results", results, "--format", "csv")
            r["report_query_s"] = _report_query(results)
            t0 = time.perf_counter()
            from harness.store import ResultStore

            ResultStore(results).cell_statuses("bench")
            r["statuses_inproc_s"] = time.perf_counter() - t0
            print(f"  N={n:>7}: writes {r['write_s']:.1f} s into {r['pending_files']} files; status "
                  f"{r['status_pending_s']:.2f} s before `qmu compact` ({r['compact_s']:.1f} s), {r['status_s']:.2f} s "
                  f"after (in process {r['statuses_inproc_s']:.2f} s); query {r['query_s']:.2f} s; report-style "
                  f"query {r['report_query_s']:.2f} s", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _print_row(r: dict) -> None:
    steady = r["run_s"] - r["startup_s"]
    print(f"  N={r['cells']:>7}: {r['stages']} stages in {r['run_s']:.1f} s ({r['stages'] / r['run_s']:.0f}/s end to "
          f"end, {r['stages'] / steady:.0f}/s after start-up {r['startup_s']:.1f} s); driver CPU {r['driver_cpu_s']:.1f} s "
          f"= {r['stages'] / r['driver_cpu_s']:.0f} stages per CPU s; peak RSS {r['peak_rss_mb']:.0f} MB; store writes "
          f"{r['write_s']:.1f} s into {r['pending_files']} files; status {r['status_pending_s']:.2f} s before `qmu compact` "
          f"({r['compact_s']:.1f} s), {r['status_s']:.2f} s after, query {r['query_s']:.2f} s, report-style query {r['report_query_s']:.2f} s"
          + (f", qmu report {r['report_s']:.1f} s" if "report_s" in r else ""), flush=True)


def _print_table(rows: list[dict]) -> None:
    cols = ("cells", "stages/s", "steady/s", "stages/drvCPUs", "peak MB", "writes s", "compact s", "status s",
            "query s", "report-q s")
    print("\n" + " | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        steady = r["run_s"] - r["startup_s"]
        vals = (r["cells"], r["stages"] / r["run_s"], r["stages"] / steady, r["stages"] / r["driver_cpu_s"],
                r["peak_rss_mb"], r["write_s"], r["compact_s"], r["status_s"], r["query_s"], r["report_query_s"])
        print(" | ".join(f"{v:>14.0f}" if i < 5 else f"{v:>14.2f}" for i, v in enumerate(vals)))
    print("(status and query through the real CLI, Python start-up included, after compaction)")


if __name__ == "__main__":
    sys.exit(main())
