"""Deterministic mini-batch training with exact or shot-based gradients."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .modules import shots_mode


@dataclass(frozen=True)
class Cost:
    seconds: float
    circuits: int
    shots: int
    device_circuits: int = 0  # circuits a device would run, parameter-shift gradients included

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.seconds + other.seconds, self.circuits + other.circuits, self.shots + other.shots,
                    self.device_circuits + other.device_circuits)

    @staticmethod
    def of(seconds: float, log: Any) -> "Cost":
        """The cost recorded by an execution log over `seconds`."""
        return Cost(seconds, log.circuits, log.shots, log.device)


def sgd(model: nn.Module, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe.get("nesterov", False)
    )


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: dict[str, Any],
    shots: int | None,
    seed: int,
    epochs: int | None = None,
) -> Cost:
    """Train `model` in place on (x, y) with SGD per `recipe`; every random draw flows from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    shot_gen = torch.Generator().manual_seed(seed + 7919)
    opt = sgd(model, recipe)
    model.train()
    start = time.perf_counter()
    with shots_mode(model, shots, shot_gen) as log:
        for _ in range(recipe["epochs"] if epochs is None else epochs):
            for idx in batches(len(y), recipe["batch_size"], gen):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return Cost.of(time.perf_counter() - start, log)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, shots: int | None = None, seed: int = 0) -> float:
    """Accuracy on the torch executor, read out at `shots` (None: exact)."""
    from ..quantum.inference import logits_on

    if len(y) == 0:
        return float("nan")
    return float((logits_on(model, x, shots, "torch", seed)[0].argmax(1) == y).double().mean())


def as_labels(y: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(y, dtype=torch.long)
