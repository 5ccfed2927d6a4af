"""The loop shared by the fine-tuning methods (random labels, SalUn, l1-sparse, CF-k, EU-k, SCRUB's min
steps): SGD for a fixed number of epochs on a method's own loss, optionally with per-parameter gradient
weights (a saliency mask, or the last k layers). A parameter whose weights are all zero takes no gradient,
so a device runs no parameter-shift circuits for it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..models import shots_mode
from ..models.training import Cost, batches, sgd

# (model, batch indices, generator, epoch) -> the loss to minimise on that batch.
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Generator, int], torch.Tensor]


@contextmanager
def gated(model: nn.Module, weights: "list[torch.Tensor] | None") -> Iterator[None]:
    """Within the block, a parameter whose weights are all zero takes no gradient."""
    saved = [p.requires_grad for p in model.parameters()]
    if weights is not None:
        for p, w in zip(model.parameters(), weights):
            p.requires_grad_(bool(w.any()) and p.requires_grad)
    try:
        yield
    finally:
        for p, r in zip(model.parameters(), saved):
            p.requires_grad_(r)


def descend(model: nn.Module, n: int, params: dict[str, Any], shots: int | None, seed: int, loss: BatchLoss,
            weights: "list[torch.Tensor] | None" = None, epochs: int | None = None) -> Cost:
    """`epochs` (default params["epochs"]) passes over batches of range(n), each step minimising `loss`;
    gradients are multiplied by `weights` where given. Every random draw flows from `seed`."""
    gen = torch.Generator().manual_seed(seed + 11)
    opt = sgd(model, {**params, "nesterov": False})
    start = time.perf_counter()
    with shots_mode(model, shots, torch.Generator().manual_seed(seed + 13)) as log, gated(model, weights):
        for epoch in range(params["epochs"] if epochs is None else epochs):
            for idx in batches(n, params["batch_size"], gen):
                model.train()
                opt.zero_grad()
                loss(model, idx, gen, epoch).backward()
                if weights is not None:
                    for p, w in zip(model.parameters(), weights):
                        if p.grad is not None:
                            p.grad.mul_(w)
                opt.step()
    return Cost.of(time.perf_counter() - start, log)


def retain_ce(data) -> BatchLoss:
    """Plain cross-entropy on retain batches (fine-tuning on the retain set)."""
    return lambda m, idx, gen, epoch: F.cross_entropy(m(data.x_retain[idx]), data.y_retain[idx])


def random_labels(y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """A label for each sample drawn uniformly from the classes other than its own."""
    gen = torch.Generator().manual_seed(seed + 17)
    shift = torch.randint(1, n_classes, y.shape, generator=gen)
    return (y + shift) % n_classes


def n_classes(model: nn.Module) -> int:
    return int(model.head.out_features)
