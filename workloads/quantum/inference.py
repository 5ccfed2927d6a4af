"""Model outputs as an evaluator sees them, on whichever backend the cell names."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backends import kind


def logits_on(
    model: nn.Module, x: torch.Tensor, shots: int | None, backend: str, seed: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(logits, cost) of `model` on x with its quantum layer run on `backend` at `shots`."""
    return kind(backend).logits(model, x, shots, backend, seed)
