"""`eu_k` (exact unlearning of the last k layers, Goel et al. 2022): re-initialise the last `k` layers
(to the untrained model's values, as `retrain` starts from) and train only them on the retain set; the
rest stays frozen. Layers: workloads/unlearning/layers.py."""

from __future__ import annotations

import torch
from ..params import Param, positive_int, rate
from .base import Outcome, Workload
from .descent import descend, retain_ce
from .layers import last_k

NAME = "eu_k"
LABEL = "EU-k"
ORDER = 14
SUMMARY = "re-initialise the last k layers and train them on the retain set (EU-k)"
TOUCHES = ("angles", "head")  # with k >= 3 on hqnn, the front end too
# Tuned (benchmarks/tune.py, hqnn-l1 class:4, seeds 100-102; benchmarks/tuning/hqnn-l1-class4.json): k 1 (the
# head), 10 epochs, lr 0.01: forget accuracy 0.000 as retrain's, validation 0.927 against 0.923 (gap 0.000);
# every k in 1-3 with 10 or 25 epochs scored 0.000-0.004, so the cheapest wins. Re-initialising the head
# forgets a class outright; the front end, untouched, still holds what it memorised (a random forget set).
PARAMS = {"k": positive_int(1, 100), "epochs": positive_int(10, 1000), "lr": rate(0.01),
          "momentum": Param(0.9, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096)}
# qnn family (benchmarks/tune.py, qnn-l10 class:4, seeds 100-102; benchmarks/tuning/qnn-l10-class4.json): the
# last 2 layers (the last circuit layer and the head) retrained for 25 epochs at lr 0.05: forget 0.000,
# validation 0.657 against 0.643 (gap 0.000); hqnn-l1's k 1, 10 epochs at lr 0.01 kept validation at 0.500 (gap
# 0.142).
FAMILY_DEFAULTS = {"qnn": {"k": 2, "epochs": 25, "lr": 0.05}}


def passes(w: Workload) -> float:
    return w.n_retain * w.params["epochs"]


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    weights = last_k(model, params["k"])
    with torch.no_grad():
        for p, q, w in zip(model.parameters(), fresh().parameters(), weights):
            p.copy_(torch.where(w.bool(), q, p))
    return Outcome(model, descend(model, len(data.y_retain), params, shots, seed, retain_ce(data), weights=weights))
