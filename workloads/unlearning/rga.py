"""`rga`: importance-gated gradient ascent, our reading of the study's relative gradient ascent.

SSD's Fisher importances pick the parameters that matter more to the forget set than to the data
(I_f > alpha * I_D); gradient ascent on the forget set moves only those. `weighting: beta` scales each
gradient by the share SSD would remove, 1 - min(lam * I_D / I_f, 1); `weighting: mask` by 1. The
importances are recomputed every `refresh_every` steps (0: once). A parameter of weight 0 takes no
gradient, so a device runs no shift circuits for it. The study does not publish its formula.
"""

from __future__ import annotations

import torch

from ..params import Param, positive_int, rate
from .ascent import STOP_PARAMS, Gate, Objective, ascend, ascent_passes
from .ascent_many import ascend_many
from .base import Outcome, Workload
from .importance import importances, is_quantum, selection, trainable

NAME = "rga"
LABEL = "RGA"
ORDER = 5
SUMMARY = "gradient ascent gated by SSD's importances (relative gradient ascent)"
TOUCHES = ("front end", "angles", "head")
STOPS = True
# lr 0.2 and alpha 10 re-derived by benchmarks/tune.py (hqnn-l1 class:4, seeds 100-102;
# benchmarks/tuning/hqnn-l1-class4.json: forget 0.019, validation 0.916 against 0.923, gap 0.026, the best of
# six; qnn-l10 chose the same, gap 0.030). Found first on seed 0, before tuning seeds existed:
# alpha 10, lam 1 (SSD's selection), weighting beta, lr 0.2, momentum 0.9, importances once (refresh_every 0;
# a refresh costs another 1,100 gradients, 0.6 M device circuits). hqnn-l1 class:4 seed 0 at lr 0.2: forget
# accuracy 0.01 after 121 steps, retained-class test accuracy 0.925 (original 0.923), loss-attack AUC
# 0.67 -> 0.53, 1.56 M device circuits (12% of retrain). The gate scales each step by w < 1, so GA's lr 0.05
# took 394 steps and 3.69 M; `weighting: mask` was alike at lr 0.05. Seeds 1 and 2 lose 3.6 points of
# retained accuracy; nothing tried held them within 3 (lr 0.1, momentum 0.5, alpha 30/100, mask,
# refresh_every 20, include_quantum false). include_quantum true: an additive step has no periodicity problem.
PARAMS = {"alpha": Param(10.0, 0.0, 1e6, open_low=True), "lam": Param(1.0, 0.0, 1e6, open_low=True),
          "weighting": Param("beta", choices=("beta", "mask")), "refresh_every": Param(0, 0, 1e6),
          "include_quantum": Param(True), "lr": rate(0.2), "momentum": Param(0.9, 0.0, 1.0, open_high=True),
          "batch_size": positive_int(16, 4096), "max_epochs": positive_int(60, 10_000), **STOP_PARAMS}
# Steps to the stop rule, paper-grid means (code 0.1.0+029a47e3bf7c): hqnn-l1 80/157/640, qnn-l10 0-82.
STEPS = {"hqnn": 292, "qnn": 29}
# U-LiRA's shadows: their ulira stages ran at 0.15x the estimate from STEPS (benchmarks/calibrate_cost.py on the
# methods grid, hqnn-l1, code 0.1.0+af956c563bb3), so about 0.15 x 292 steps.
SHADOW_STEPS = {"hqnn": 44}


def passes(w: Workload) -> float:  # SSD's importances, then the ascent
    return w.n_train + w.n_forget + ascent_passes(w, STEPS, shadow_steps=SHADOW_STEPS)


OBJECTIVE = Objective(forget=-1.0)


def gate(model, data, params, seed) -> Gate:
    """SSD's selection as gradient weights on `model`, recomputed at each call (seeds seed + 6, + 8, ...)."""
    x_all, y_all = torch.cat([data.x_retain, data.x_forget]), torch.cat([data.y_retain, data.y_forget])
    wanted = (lambda n: True) if params["include_quantum"] else (lambda n: not is_quantum(n))
    calls = iter(range(1 << 30))

    def weights() -> list[torch.Tensor]:
        with trainable(model, wanted):
            i_d, i_f = importances(model, x_all, y_all, data.x_forget, data.y_forget, params["batch_size"],
                                   seed + 6 + 2 * next(calls))
        out = []
        for (name, _), d, f in zip(model.named_parameters(), i_d, i_f):
            mask, beta = selection(d, f, params["alpha"], params["lam"])
            w = (1 - beta) * mask if params["weighting"] == "beta" else mask.to(d.dtype)
            out.append(w if wanted(name) else torch.zeros_like(w))
        return out

    return weights


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return ascend(model, data, params, shots, seed, OBJECTIVE.step_loss(data, params["batch_size"]),
                  gate(model, data, params, seed))


def run_many(models, datas, recipe, params, seeds) -> list[dict[str, float]]:
    """`run` for K exact models at once (`ascend_many`, each model's gate computed on it alone)."""
    return ascend_many(models, datas, params, seeds, OBJECTIVE,
                       [gate(m, d, params, s) for m, d, s in zip(models, datas, seeds)])
