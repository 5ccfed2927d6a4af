"""What training models in groups saves on a whole grid: the grid run with every stage alone (QMU_GROUPS=off:
each reference and replica model trained by itself, as before groups existed) and as it runs now (the missing
reference models of a seed, and a cell's replicas, trained together by `train_many`), one after the other
into fresh results roots on the same machine. Prints both wall times, their ratio, and each run's worker
seconds per stage kind. U-LiRA's shadows are trained and unlearned together either way (one stage).

Usage: python benchmarks/bench_grouping.py [--grid grids/paper.yaml] [--seeds 0] [--keep DIR]
Run it on a quiet machine: the two runs are timed one after the other, not side by side.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit_cost import stage_seconds  # noqa: E402
from harness.runner import GROUPS_ENV  # noqa: E402


def run(spec: dict, work: Path, groups: bool) -> tuple[float, Path]:
    path, root = work / f"{spec['name']}.yaml", work / f"{spec['name']}-results"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, GROUPS_ENV: "on" if groups else "off"}
    t0 = time.time()
    with open(work / f"{spec['name']}.log", "w") as log:
        subprocess.run(["qmu", "run", str(path), "--results", str(root)], cwd=ROOT, check=True, stdout=log,
                       stderr=subprocess.STDOUT, env=env)
    return time.time() - t0, root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default=str(ROOT / "grids" / "paper.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", help="run these seeds only (default: the grid's)")
    p.add_argument("--keep", help="keep both results roots under this folder")
    args = p.parse_args(argv)
    grid = yaml.safe_load(Path(args.grid).read_text())
    work = Path(args.keep or tempfile.mkdtemp(prefix="qmu-grouping-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        walls, roots = {}, {}
        for label, groups in (("alone", False), ("grouped", True)):
            spec = {**grid, "name": f"{grid['name']}-{label}", "grid": {**grid["grid"]}}
            if args.seeds is not None:
                spec["grid"]["seed"] = args.seeds
            walls[label], roots[label] = run(spec, work, groups)
            print(f"{label}: {walls[label]:.0f} s", flush=True)
        print(f"\n{grid['name']} ({'seeds ' + ' '.join(map(str, args.seeds)) if args.seeds else 'all seeds'}): "
              f"alone {walls['alone'] / 60:.1f} min, grouped {walls['grouped'] / 60:.1f} min, "
              f"speed-up {walls['alone'] / walls['grouped']:.2f}x")
        for label in walls:
            secs = stage_seconds(roots[label])
            print(f"  {label}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(secs.items())))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
