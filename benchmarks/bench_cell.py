"""qnn-l5's training epoch as a `qmu run` cell reports it, each cell paired with a PennyLane epoch run right after.

Every pair: a one-cell grid (qnn-l5, method none, 1000 MNIST samples, `--epochs` epochs, exact, float64) run by
`qmu run --workers 1` into a fresh results root, its `train_seconds / epochs` read back with `qmu query`, then one
epoch of the same circuit and recipe in PennyLane (default.qubit, broadcasting, backprop; as in
bench_simulator.py). Pairing keeps both sides of each ratio in the same minute of a shared machine. A short cell
(5 epochs: a third of a second of training) is at the mercy of the machine's slow seconds; longer ones average
them out. PennyLane is an optional extra of the benchmarks, never a dependency.
Run: python benchmarks/bench_cell.py [--pairs 5] [--epochs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

GRID = """name: cell
dataset: mnist
n_train: 1000
n_test: 500
backend: torch
grid:
  model: [qnn-l5]
  forget: ["class:4"]
  method: [none]
  seed: [0]
params:
  qnn-l5: {{epochs: {epochs}}}
"""


def cell_epoch(epochs: int, work: Path) -> float:
    """Seconds per epoch of the train stage of a fresh one-cell `qmu run` with one worker."""
    grid, results = work / "cell.yaml", work / "results"
    grid.write_text(GRID.format(epochs=epochs))
    qmu = [sys.executable, "-m", "harness.cli"]
    subprocess.run([*qmu, "run", str(grid), "--workers", "1", "-r", str(results)], check=True, capture_output=True)
    out = subprocess.run([*qmu, "query", "-f", "csv", "-r", str(results), "select train_seconds from cells"],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) / epochs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5, help="training epochs of each cell")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_simulator import pennylane_epoch

    if pennylane_epoch() is None:  # also a warm-up: the first PennyLane epoch of a process builds its caches
        p.error("PennyLane is not installed (pip install pennylane)")
    print(f"qnn-l5: {args.epochs}-epoch qmu run cells (one worker), each followed by a PennyLane epoch")
    ratios = []
    for i in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            ours = cell_epoch(args.epochs, Path(tmp))
        peer = pennylane_epoch()
        ratios.append(peer / ours)
        print(f"pair {i + 1}: cell {ours:.4f} s/epoch, PennyLane {peer:.3f} s, {peer / ours:.1f}x", flush=True)
    print(f"ratios: {', '.join(f'{r:.1f}x' for r in ratios)}; lowest {min(ratios):.1f}x")


if __name__ == "__main__":
    main()
