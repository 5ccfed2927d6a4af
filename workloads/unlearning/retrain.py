"""`retrain`: train from scratch on the retain set with the original recipe (the gold standard)."""

from __future__ import annotations

from ..models.training import fit
from ..params import Param
from .base import Outcome, Workload

NAME = "retrain"
LABEL = "retrain"
ORDER = 1
SUMMARY = "train from scratch on the retain set with the original recipe"
TOUCHES = ("front end", "angles", "head")
# `replicas`: retrained models per cell. Beyond the first, each is another initialisation and data order of
# the same retraining, and the cell stores how far it lies from the first (`floor_*` columns): the
# retrain-to-retrain noise floor that "close to retrain" is read against. 1 = no floor (no extra cost).
PARAMS = {"replicas": Param(1, 1, 16)}


def passes(w: Workload) -> float:
    return w.n_retain * w.recipe["epochs"]


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    new = fresh()
    return Outcome(new, fit(new, data.x_retain, data.y_retain, recipe, shots, seed))
