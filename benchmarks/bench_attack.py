"""The attack MLP's training, measured side by side in one run on one core (torch threads = 1).

Times the 13-64-64-1 MLP's full-batch epochs (1000 samples, dropout 0.3, Adam) two ways:
- hand-written forward, backward and Adam, as `workloads.attacks.mlp` runs them;
- the textbook torch loop: nn.Dropout, autograd and torch.optim.Adam (fused).
Every attack stage fits two of these (the `study` and `heldout` protocols), 1000 epochs each.
Run: python benchmarks/bench_attack.py [--epochs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workloads.attacks.mlp import DTYPE, PaperMLP, _train
from workloads.hparams import EXTRA_DEFAULTS


def _data(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 13, generator=gen).to(DTYPE), (torch.rand(n, generator=gen) > 0.5).to(DTYPE)


def hand_written(params: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    mlp = PaperMLP(params["hidden"], params["dropout"])
    start = time.perf_counter()
    _train(mlp, x, y, params, np.random.default_rng(0))
    return time.perf_counter() - start


def textbook(params: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    mlp = PaperMLP(params["hidden"], params["dropout"])
    opt = torch.optim.Adam(mlp.parameters(), lr=params["lr"], fused=True)
    mlp.train()
    start = time.perf_counter()
    for _ in range(params["epochs"]):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(mlp(x), y).backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    assert isinstance(PaperMLP().net[2], nn.Dropout)
    params = {**EXTRA_DEFAULTS["attack"], "epochs": args.epochs}
    x, y = _data()
    ours, theirs = [], []
    for _ in range(args.repeat):  # alternating, so that load drifts hit both alike
        ours.append(hand_written(params, x, y))
        theirs.append(textbook(params, x, y))
    a, b = min(ours), min(theirs)
    print(f"attack MLP, {args.epochs} epochs of 1000 samples, best of {args.repeat}, one core")
    print(f"  hand-written: {a:.3f} s ({a / args.epochs * 1e3:.2f} ms an epoch)")
    print(f"  torch loop:   {b:.3f} s ({b / args.epochs * 1e3:.2f} ms an epoch)")
    print(f"  speed-up:     {b / a:.2f}x")


if __name__ == "__main__":
    main()
