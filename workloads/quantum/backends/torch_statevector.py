"""`torch`: the project's own float64 statevector executor (exact, or S shots per circuit); no qiskit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...models.modules import shots_mode

NAME = "torch"
LABEL = "torch statevector"
SUMMARY = "exact float64 statevector in torch, the training executor; `exact` or S shots per circuit"
NAMED = False  # the name carries no device (`torch`, never `torch:<x>`)
EXACT = True  # can evaluate exact expectations (eval_shots: exact)
QISKIT = False  # runs the model's own kernel, not a transpiled qiskit circuit
DEVICE = False  # no calibration, repetition delay or scheduled duration
HARDWARE = False  # spends no QPU budget


def validate(device: str) -> None:
    """Nothing to check: the executor is always there."""


def logits(model: nn.Module, x: torch.Tensor, shots: int | None, backend: str,
           seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad(), shots_mode(model, shots, gen) as log:
        out = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    return out, {"circuits": float(log.circuits), "shots": float(log.shots)}
