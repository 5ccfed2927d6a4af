"""`neggrad_plus` (NegGrad+, Kurmanji et al., NeurIPS 2023): GradDiff with a mixing weight,
loss = beta * CE(retain batch) - (1 - beta) * CE(forget batch), until the stop rule fires."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..params import Param, positive_int, rate
from .ascent import STOP_PARAMS, ascend, ascent_passes
from .base import Outcome, Workload

NAME = "neggrad_plus"
LABEL = "NegGrad+"
ORDER = 8
SUMMARY = "beta * retain loss - (1 - beta) * forget loss, to the stop rule (NegGrad+)"
TOUCHES = ("front end", "angles", "head")
STOPS = True
# TUNED: see benchmarks/tune.py and docs/methods.md (tuning seeds 100-102, validation split).
PARAMS = {"beta": Param(0.9, 0.0, 1.0, open_high=True), "lr": rate(0.1),
          "momentum": Param(0.0, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096),
          "max_epochs": positive_int(300, 10_000), **STOP_PARAMS}
# Steps to the stop rule (tuning seeds 100-102, MNIST class:4): see docs/methods.md.
STEPS = {"hqnn": 716, "qnn": 4}


def passes(w: Workload) -> float:
    return ascent_passes(w, STEPS, retain_batches=1)


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    beta = params["beta"]

    def loss(m, logits, y, gen):
        r = torch.randint(len(data.y_retain), (params["batch_size"],), generator=gen)
        return -(1 - beta) * F.cross_entropy(logits, y) + beta * F.cross_entropy(m(data.x_retain[r]), data.y_retain[r])

    return ascend(model, data, params, shots, seed, loss)
