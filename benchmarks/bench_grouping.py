"""What training models in groups saves on a whole grid: the grid run with every stage alone (QMU_GROUPS=off:
each original, reference and replica model trained by itself, as before groups existed) and as it runs now
(the missing original models of the grid's seeds, the reference models of a seed, and a cell's replicas,
trained together by `train_many`), one after the other into fresh results roots on the same machine. Prints
both wall times, their ratio, and each run's worker seconds per stage kind. U-LiRA's shadows are trained and unlearned together either way (one stage).

Usage: python benchmarks/bench_grouping.py [--grid grids/paper.yaml] [--seeds 0] [--eval-shots exact] [--keep DIR]
Run it on a quiet machine: the two runs are timed one after the other, not side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_audit_cost import arguments, narrowed, pair  # noqa: E402
from harness.identity import GROUPS_ENV  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    grid = yaml.safe_load(Path(args.grid).read_text())
    runs = [(label, narrowed(grid, f"{grid['name']}-{label}", args), {GROUPS_ENV: groups})
            for label, groups in (("alone", "off"), ("grouped", "on"))]
    pair(args, "qmu-grouping-", runs)


if __name__ == "__main__":
    main()
