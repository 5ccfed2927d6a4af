"""Model outputs as an evaluator sees them: on the torch executor or on a qiskit backend."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.modules import shots_mode


def logits_on(
    model: nn.Module, x: torch.Tensor, shots: int | None, backend: str, seed: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(logits, cost) of `model` on x with its quantum layer run on `backend` at `shots`."""
    if backend == "torch":
        gen = torch.Generator().manual_seed(seed)
        model.eval()
        with torch.no_grad(), shots_mode(model, shots, gen) as log:
            out = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
        return out, {"circuits": float(log.circuits), "shots": float(log.shots)}
    from .backends import backend_logits

    return backend_logits(model, x, shots, backend, seed)
