"""Diagonal Fisher importances (SSD's I_D and I_f) and the parameter selection built on them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..models.training import batches

Wanted = Callable[[str], bool]


def is_quantum(name: str) -> bool:
    return name.startswith("quantum.")


@contextmanager
def trainable(model: nn.Module, wanted: Wanted) -> Iterator[None]:
    """Only parameters named by `wanted` take gradients within the block: a device runs no
    parameter-shift circuits for the others."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(wanted(n))
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Mean squared minibatch gradients, one tensor per parameter (shots set by the caller);
    zero for parameters that take no gradient."""
    gen = torch.Generator().manual_seed(seed)
    acc = [torch.zeros_like(p) for p in model.parameters()]
    parts = batches(len(y), batch_size, gen)
    model.eval()
    for idx in parts:
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        for a, p in zip(acc, model.parameters()):
            if p.grad is not None:
                a += p.grad.detach() ** 2
    model.zero_grad()
    return [a / len(parts) for a in acc]


def importances(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, x_forget: torch.Tensor,
                y_forget: torch.Tensor, batch_size: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(I_D over all training data, I_f over the forget set)."""
    return (fisher_diagonal(model, x_all, y_all, batch_size, seed),
            fisher_diagonal(model, x_forget, y_forget, batch_size, seed + 1))


def selection(i_d: torch.Tensor, i_f: torch.Tensor, alpha: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD's choice: (mask of I_f > alpha * I_D, dampening factor beta = min(lam * I_D / I_f, 1))."""
    mask = i_f > alpha * i_d
    beta = torch.clamp(lam * i_d / i_f.clamp_min(1e-30), max=1.0)
    return mask, beta
