"""`finetune`: continue training on the retain set only, a few epochs."""

from __future__ import annotations

from ..models.training import fit
from .base import Outcome


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return Outcome(model, fit(model, data.x_retain, data.y_retain, {**params, "nesterov": False}, shots, seed + 1))
