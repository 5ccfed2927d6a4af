"""`retrain`: train from scratch on the retain set with the original recipe (the gold standard)."""

from __future__ import annotations

from ..models.training import fit
from .base import Outcome, Workload

NAME = "retrain"
LABEL = "retrain"
ORDER = 1
SUMMARY = "train from scratch on the retain set with the original recipe"
TOUCHES = ("front end", "angles", "head")
PARAMS = {}


def passes(w: Workload) -> float:
    return w.n_retain * w.recipe["epochs"]


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    new = fresh()
    return Outcome(new, fit(new, data.x_retain, data.y_retain, recipe, shots, seed))
