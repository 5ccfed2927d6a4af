"""`eu_k` (exact unlearning of the last k layers, Goel et al. 2022): re-initialise the last `k` layers
(to the untrained model's values, as `retrain` starts from) and train only them on the retain set; the
rest stays frozen. Layers: workloads/unlearning/layers.py."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..params import Param, positive_int, rate
from .base import Outcome, Workload
from .descent import descend
from .layers import last_k

NAME = "eu_k"
LABEL = "EU-k"
ORDER = 14
SUMMARY = "re-initialise the last k layers and train them on the retain set (EU-k)"
TOUCHES = ("angles", "head")  # with k >= 3 on hqnn, the front end too
# TUNED: see benchmarks/tune.py and docs/methods.md.
PARAMS = {"k": positive_int(2, 100), "epochs": positive_int(10, 1000), "lr": rate(0.05),
          "momentum": Param(0.9, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096)}


def passes(w: Workload) -> float:
    return w.n_retain * w.params["epochs"]


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    weights = last_k(model, params["k"])
    with torch.no_grad():
        for p, q, w in zip(model.parameters(), fresh().parameters(), weights):
            p.copy_(torch.where(w.bool(), q, p))
    loss = lambda m, idx, gen, epoch: F.cross_entropy(m(data.x_retain[idx]), data.y_retain[idx])  # noqa: E731
    return Outcome(model, descend(model, len(data.y_retain), params, shots, seed, loss, weights=weights))
