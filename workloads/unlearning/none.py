"""`none`: the original model, the leakage baseline."""

from __future__ import annotations

from ..models.training import Cost
from .base import Outcome, Workload

NAME = "none"
LABEL = "none (original)"
ORDER = 0
SUMMARY = "the original model, the leakage baseline"
TOUCHES = ()  # parameter groups it changes
PARAMS = {}


def passes(w: Workload) -> float:
    return 0.0


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return Outcome(model, Cost(0.0, 0, 0))
