"""Harness benchmarks, measured side by side in one run (also `qmu bench harness`):

1. overhead: N trivial cells (stages that do nothing) through the harness (Ray actors, stage keys,
   Parquet + safetensors store) against a plain in-process loop calling the same stage functions;
2. speed-up: the smoke grid (real cells) on 2 workers against 1, each into a fresh store.

Usage: python benchmarks/bench_harness.py [--cells 200] [--skip-smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from tests.support import trivial  # noqa: E402
from harness.grid_spec import GridSpec, load_grid  # noqa: E402
from harness.runner import connect, run_grid  # noqa: E402
from harness.store import ResultStore  # noqa: E402


def trivial_spec(n_cells: int) -> GridSpec:
    """n_cells trivial cells: 5 methods x 4 eval-shot counts x n/20 seeds."""
    seeds = tuple(range(max(1, n_cells // 20)))
    axes = {"model": ("qnn-angle-l2",), "forget": ("class:4",), "method": ("none", "finetune", "ga", "ssd", "rga"),
            "train_shots": (None,), "unlearn_shots": (None,), "eval_shots": (None, 1024, 128, 16), "seed": seeds,
            "backend": ("torch",)}
    return GridSpec("bench", "<bench>", "digits", 200, 100, axes, {})


def plain_loop(spec: GridSpec) -> float:
    """Every cell's four stages called in-process, no store, no reuse: the floor a harness cannot beat."""
    t0 = time.perf_counter()
    for cfg in spec.cells(trivial.CellConfig):
        tr = trivial.train_stage(cfg)
        un = trivial.unlearn_stage(cfg, tr.state)
        at = trivial.attack_stage(cfg, tr.state)
        trivial.evaluate_stage(cfg, tr.state, un.state, at.state,
                               costs={"train": tr.cost, "unlearn": un.cost, "attack": at.cost})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--skip-smoke", action="store_true", help="only the overhead benchmark")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, ray {ray.__version__}", flush=True)

    t0 = time.perf_counter()
    connect(workers=2)
    t_ray = time.perf_counter() - t0

    spec = trivial_spec(args.cells)
    n = spec.n_cells
    loop = plain_loop(spec)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        s = run_grid(spec, ResultStore(d), impl="tests.support.trivial", workers=2)
        harness_s = time.perf_counter() - t0
        assert s.cells_ok == n, s.failures
        t0 = time.perf_counter()
        s2 = run_grid(spec, ResultStore(d), impl="tests.support.trivial", workers=2)
        resume_s = time.perf_counter() - t0
        assert s2.cells_skipped == n
    stages = sum(s.stages_run.values())
    print(f"\n[overhead] {n} trivial cells ({stages} stages after dedup), 2 workers")
    print(f"  plain loop            {loop:8.3f} s")
    print(f"  harness               {harness_s:8.3f} s   (+ {t_ray:.1f} s to start Ray once)")
    steady = harness_s - s.startup_seconds
    print(f"  ratio harness/loop    {harness_s / loop:8.1f} x   = {1000 * (harness_s - loop) / n:.1f} ms overhead "
          f"per cell, {1000 * harness_s / stages:.1f} ms per stage")
    print(f"  of which startup      {s.startup_seconds:8.3f} s   (plan, actor pool); after it "
          f"{1000 * steady / n:.1f} ms per cell, {1000 * steady / stages:.1f} ms per stage")
    print(f"  re-run (all done)     {resume_s:8.3f} s")

    if not args.skip_smoke:
        smoke = load_grid(ROOT / "grids" / "smoke.yaml")
        times = {}
        for w in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                s = run_grid(smoke, ResultStore(d), workers=w)
                times[w] = time.perf_counter() - t0
                assert s.cells_ok == smoke.n_cells, s.failures
        print(f"\n[speed-up] smoke grid ({smoke.n_cells} cells, real), fresh store each")
        print(f"  1 worker              {times[1]:8.1f} s")
        print(f"  2 workers             {times[2]:8.1f} s")
        print(f"  speed-up 2 vs 1       {times[1] / times[2]:8.2f} x   (ideal 2.00 on {cpus} CPUs)")
        load = os.getloadavg()[0]
        if load > cpus:
            print(f"  note: load average {load:.1f} on {cpus} CPUs during this run; other processes share the "
                  "cores and Ray runs its workers at nice 15, so the speed-up is understated")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
