"""`cf_k` (catastrophic forgetting of the last k layers, Goel et al. 2022): fine-tune only the last `k`
layers on the retain set; the rest stays frozen. Layers on these models: workloads/unlearning/layers.py
(k = 1 is the classical head; k = 2 adds the circuit's last variational layer)."""

from __future__ import annotations

from ..params import Param, positive_int, rate
from .base import Outcome, Workload
from .descent import descend, retain_ce
from .layers import last_k

NAME = "cf_k"
LABEL = "CF-k"
ORDER = 13
SUMMARY = "fine-tune the last k layers on the retain set (CF-k)"
TOUCHES = ("angles", "head")  # with k >= 3 on hqnn, the front end too
# Tuned (benchmarks/tune.py, hqnn-l1 class:4, seeds 100-102; benchmarks/tuning/hqnn-l1-class4.json): no setting
# forgets. k 1-3, 5 or 25 epochs, lr 0.05 or 0.2 all kept forget accuracy at 1.000 (validation 0.923-0.934):
# the retain set alone gives no gradient that moves a class-4 image away from class 4. The cheapest (k 1,
# 5 epochs, lr 0.05) is the default, a baseline of what fine-tuning the last layers does not remove.
PARAMS = {"k": positive_int(1, 100), "epochs": positive_int(5, 1000), "lr": rate(0.05),
          "momentum": Param(0.9, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096)}
# qnn family (benchmarks/tune.py, qnn-l10 class:4, seeds 100-102; benchmarks/tuning/qnn-l10-class4.json): 25
# epochs at lr 0.2 on the head: forget 0.000, validation 0.690 against 0.643 (gap 0.000); unlike hqnn-l1, the
# qnn-l10 head alone can forget a class (5 epochs at lr 0.05: gap 0.040).
FAMILY_DEFAULTS = {"qnn": {"epochs": 25, "lr": 0.2}}


def passes(w: Workload) -> float:
    return w.n_retain * w.params["epochs"]  # an upper bound: frozen layers need no weight gradient


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return Outcome(model, descend(model, len(data.y_retain), params, shots, seed, retain_ce(data), weights=last_k(model, params["k"])))
