"""How far the cost model (`harness/estimate.py`, behind `qmu run --dry-run` and the first ETA) is from a
finished run: per stage kind and model (and method, for unlearning), the worker seconds the stored stages
recorded against what the cost model estimated for them.

Usage: python benchmarks/calibrate_cost.py GRID.yaml RESULTS
The grid must have run into RESULTS on this code version (stage keys carry it). A group member records its
share of the group's wall; evaluate's seconds come from the cells' `eval_seconds`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measured_vs_estimated(grid: Path, results: str) -> pd.DataFrame:
    """One row per stage that ran: kind, model, method (unlearn and ulira), measured and estimated seconds."""
    from harness.estimate import stage_estimate
    from harness.grid_spec import load_grid
    from harness.runner import plan_grid
    from harness.store import ResultStore
    from reports.queries import connect

    spec = load_grid(grid)
    plan, _, _ = plan_grid(spec, None)
    store = ResultStore(results)
    stored = store.artifact_keys()
    s = connect(results)
    try:
        evals = dict(s.con.execute("SELECT cell_id, eval_seconds FROM cells WHERE status = 'ok' AND grid = ?",
                                   [spec.name]).fetchall())
    finally:
        s.close()
    rows = []
    for node in plan.stages.values():
        if node.kind == "evaluate":
            secs = [evals[c] for c in node.cells if c in evals]
            wall = secs[0] if secs else None
        else:
            wall = json.loads(store.artifact_metadata(node.key).get("qmu", "{}")).get("wall") \
                if node.key in stored else None
        if wall is None:
            continue
        method = getattr(node.cfg, "method", None) if node.kind in ("unlearn", "ulira") else ""
        rows.append({"kind": node.kind, "model": node.cfg.model, "method": method, "measured": float(wall),
                     "estimated": stage_estimate(node.kind, node.cfg).seconds})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", type=Path)
    p.add_argument("results")
    args = p.parse_args(argv)
    df = measured_vs_estimated(args.grid, args.results)
    if df.empty:
        sys.exit(f"error: no stage of {args.grid} is stored in {args.results} at this code version")
    t = df.groupby(["kind", "model", "method"], sort=False).agg(
        stages=("measured", "size"), measured=("measured", "sum"), estimated=("estimated", "sum"))
    t["ratio"] = t.measured / t.estimated.where(t.estimated > 0)  # a stage estimated at 0 s has no ratio
    pd.set_option("display.width", 200)
    print(t.round({"measured": 1, "estimated": 1, "ratio": 2}).to_string())
    m, e = df.measured.sum(), df.estimated.sum()
    print(f"\nall stages: measured {m:.0f} s, estimated {e:.0f} s, ratio {m / e:.2f}")


if __name__ == "__main__":
    main()
