"""What the strongest attacker costs: a grid run as the first version ran it (held-out MLP fit once on the
original model, reference models at a quarter of the recipe, RMIA's offline a fixed at 0.3) and as it runs
now (the MLP refit on every evaluated model, full-strength references, a searched), one after the other
into fresh results roots on the same machine. Prints both wall times, their ratio, and each run's CPU
seconds per stage kind (from the stored artifacts' records), so that the refit's and the references' shares
can be read off.

Usage: python benchmarks/bench_audit_cost.py [--grid grids/paper.yaml] [--seeds 0 1 2 3 4] [--eval-shots exact]
       [--keep DIR]
Run it on a quiet machine: the two runs are timed one after the other, not side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The first version's attacker, in today's params (docs/grid.md "Which attacks run").
BEFORE = {"attack": {"fit_on": "original"}, "references": {"epoch_fraction": 0.25}, "rmia": {"offline_a": 0.3}}


def narrowed(grid: dict, name: str, args: argparse.Namespace) -> dict:
    """The grid under `name`, with only the seeds and eval shot counts that `args` asks for."""
    out = {**grid, "name": name, "grid": {**grid["grid"]}}
    if args.seeds is not None:
        out["grid"]["seed"] = args.seeds
    if args.eval_shots is not None:
        out["grid"]["eval_shots"] = [v if v == "exact" else int(v) for v in args.eval_shots]
    return out


def variant(grid: dict, name: str, args: argparse.Namespace, before: bool) -> dict:
    out = narrowed(grid, name, args)
    if before:
        params = {k: dict(v) for k, v in (grid.get("params") or {}).items()}
        for section, values in BEFORE.items():
            params.setdefault(section, {}).update(values)
        out["params"] = params
    return out


def run(spec: dict, work: Path, env: dict[str, str] | None = None) -> tuple[float, Path]:
    """`qmu run` of `spec` into a fresh results root under `work` (with `env` added to the environment)."""
    path, root = work / f"{spec['name']}.yaml", work / f"{spec['name']}-results"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.time()
    with open(work / f"{spec['name']}.log", "w") as log:  # the run's progress lines, kept beside its grid
        subprocess.run(["qmu", "run", str(path), "--results", str(root)], cwd=ROOT, check=True, stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return time.time() - t0, root


def stage_seconds(root: Path) -> dict[str, float]:
    """Worker seconds per stage kind: each stored stage's recorded wall (a group member: its share), and
    evaluate (where the held-out attack is refit on the evaluated model) from the cells' eval_seconds."""
    from harness.store import ResultStore
    from reports.queries import connect

    store, out = ResultStore(str(root)), {}
    for key in store.artifact_keys():
        meta = json.loads(store.artifact_metadata(key).get("qmu", "{}"))
        out[meta.get("kind", "?")] = out.get(meta.get("kind", "?"), 0.0) + float(meta.get("wall", 0.0))
    s = connect(str(root))
    try:
        out["evaluate"] = float(s.df("SELECT sum(eval_seconds) AS s FROM cells WHERE status = 'ok'").s.iloc[0])
    finally:
        s.close()
    return out


def arguments(doc: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--grid", default=str(ROOT / "grids" / "paper.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", help="run these seeds only (default: the grid's)")
    p.add_argument("--eval-shots", nargs="+", help="run these eval shot counts only, e.g. exact (default: the grid's; "
                   "they change evaluation only, the same in both runs)")
    p.add_argument("--keep", help="keep both results roots under this folder")
    return p.parse_args(argv)


def pair(args: argparse.Namespace, prefix: str, runs: list[tuple[str, dict, dict[str, str]]]) -> None:
    """Two runs (label, grid spec, environment), one after the other in fresh results roots; prints their walls,
    the second's over the first's, and each run's worker seconds per stage kind."""
    work = Path(args.keep or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        walls, roots = {}, {}
        for label, spec, env in runs:
            walls[label], roots[label] = run(spec, work, env)
            print(f"{label}: {walls[label]:.0f} s", flush=True)
        (first, a), (second, b) = walls.items()
        seeds = "seeds " + " ".join(map(str, args.seeds)) if args.seeds else "all seeds"
        shots = f", eval shots {' '.join(args.eval_shots)}" if args.eval_shots else ""
        print(f"\n{Path(args.grid).stem} ({seeds}{shots}): {first} {a / 60:.1f} min, {second} {b / 60:.1f} min, "
              f"{second} / {first} {b / a:.2f}x")
        for label in walls:
            secs = stage_seconds(roots[label])
            print(f"  {label}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(secs.items())))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    grid = yaml.safe_load(Path(args.grid).read_text())
    pair(args, "qmu-audit-cost-", [(label, variant(grid, f"{grid['name']}-{label}", args, before), {})
                                   for label, before in (("before", True), ("after", False))])


if __name__ == "__main__":
    main()
