"""`ga`: gradient ascent on the forget set (minimise -CE) until the stop rule fires, then an optional
repair on the retain set."""

from __future__ import annotations

from torch.nn import functional as F

from ..models.training import fit
from .ascent import ascend
from .base import Outcome


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    out = ascend(model, data, params, shots, seed, lambda m, logits, y, gen: -F.cross_entropy(logits, y))
    if params["repair_epochs"] > 0:
        repair = {**params, "epochs": params["repair_epochs"], "lr": 0.01, "nesterov": False}
        out.cost = out.cost + fit(model, data.x_retain, data.y_retain, repair, shots, seed + 4)
    return out
