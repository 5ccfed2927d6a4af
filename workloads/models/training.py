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


class SGD:
    """torch's SGD (momentum, dampening 0, optional Nesterov, no weight decay), elementwise the same
    arithmetic as `torch.optim.SGD`, on one model's parameters or on K models' stacked on a leading axis;
    `maximize` ascends. Its step costs half of torch's (55 against 95 us for qnn-l5, measured), whose
    generic checks are a tenth of a qnn-l5 training step.

    `step(active)` leaves the models where `active` is False, parameters and momentum both, as they are.
    """

    def __init__(self, params: dict[str, torch.Tensor], lr: float, momentum: float = 0.0, nesterov: bool = False,
                 maximize: bool = False):
        self.params, self.lr, self.momentum, self.nesterov, self.maximize = params, lr, momentum, nesterov, maximize
        self.buffers: dict[str, torch.Tensor] = {}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        idle = None if active is None or bool(active.all()) else (~active).nonzero().flatten()
        for name, p in self.params.items():
            if p.grad is None:
                continue
            kept = None if idle is None else (p[idle].clone(), self.buffers[name][idle].clone()
                                              if name in self.buffers else None)
            self._update(name, p)
            if kept is not None:
                p[idle] = kept[0]
                if kept[1] is not None:
                    self.buffers[name][idle] = kept[1]
                elif self.momentum != 0:  # a model idle from the first step has no momentum yet
                    self.buffers[name][idle] = 0.0

    def _update(self, name: str, p: torch.Tensor) -> None:
        grad = -p.grad if self.maximize else p.grad
        if self.momentum != 0:
            buf = self.buffers.get(name)
            if buf is None:
                buf = self.buffers[name] = torch.clone(grad).detach()
            else:
                buf.mul_(self.momentum).add_(grad, alpha=1)
            grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
        p.add_(grad, alpha=-self.lr)


def sgd(model: nn.Module, recipe: dict[str, Any]) -> SGD:
    return SGD(dict(model.named_parameters()), recipe["lr"], recipe["momentum"], recipe.get("nesterov", False))


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
