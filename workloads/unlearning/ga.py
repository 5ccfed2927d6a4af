"""`ga`: gradient ascent on the forget set (minimise -CE) until the stop rule fires, then an optional
repair on the retain set."""

from __future__ import annotations

from torch.nn import functional as F

from ..models.training import fit
from .ascent import ascend
from ..params import Param, positive_int, rate
from .ascent import STOP_PARAMS, ascent_passes
from .base import Outcome, Workload

NAME = "ga"
LABEL = "GA"
ORDER = 3
SUMMARY = "gradient ascent on the forget set until the stop rule fires"
TOUCHES = ("front end", "angles", "head")
STOPS = True
# Measured on MNIST, class:4, n_train 1000, hqnn-l1 seed 0 (device circuits count parameter-shift gradients
# as a device would run them; retrain cost 12.62 M there). The paper's lr 0.01 for 6 epochs moves nothing
# and unbounded ascent collapses the model, so GA ascends until the stop rule fires, bounded by max_epochs.
# Momentum 0.9 and lr 0.05: forget accuracy 1.0 -> 0.01 in 181 steps, 1.42 M device circuits (11% of
# retrain), retained-class test accuracy 0.923 -> 0.844: the ascent collapses abruptly between two checks.
PARAMS = {"lr": rate(0.05), "momentum": Param(0.9, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096),
          "max_epochs": positive_int(60, 10_000), "repair_epochs": Param(0, 0, 1000), **STOP_PARAMS}
# Optimiser steps to the stop rule, means of the paper grid on code 0.1.0+029a47e3bf7c (3 seeds x class:4,
# random:50, random:200): hqnn-l1 126/133/268, qnn-l10 3-4.
STEPS = {"hqnn": 176, "qnn": 4}


def passes(w: Workload) -> float:
    return ascent_passes(w, STEPS) + w.n_retain * w.params["repair_epochs"]


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    out = ascend(model, data, params, shots, seed, lambda m, logits, y, gen: -F.cross_entropy(logits, y))
    if params["repair_epochs"] > 0:
        repair = {**params, "epochs": params["repair_epochs"], "lr": 0.01, "nesterov": False}
        out.cost = out.cost + fit(model, data.x_retain, data.y_retain, repair, shots, seed + 4)
    return out
