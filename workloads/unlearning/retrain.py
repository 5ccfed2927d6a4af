"""`retrain`: train from scratch on the retain set with the original recipe (the gold standard)."""

from __future__ import annotations

from ..models.training import fit
from .base import Outcome


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    new = fresh()
    return Outcome(new, fit(new, data.x_retain, data.y_retain, recipe, shots, seed))
