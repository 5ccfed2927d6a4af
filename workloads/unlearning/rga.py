"""`rga`: importance-gated gradient ascent, our reading of the study's relative gradient ascent.

SSD's Fisher importances pick the parameters that matter more to the forget set than to the data
(I_f > alpha * I_D); gradient ascent on the forget set moves only those. `weighting: beta` scales each
gradient by the share SSD would remove, 1 - min(lam * I_D / I_f, 1); `weighting: mask` by 1. The
importances are recomputed every `refresh_every` steps (0: once). A parameter of weight 0 takes no
gradient, so a device runs no shift circuits for it. The study does not publish its formula.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .ascent import ascend
from .base import Outcome
from .importance import importances, is_quantum, selection, trainable


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    x_all, y_all = torch.cat([data.x_retain, data.x_forget]), torch.cat([data.y_retain, data.y_forget])
    wanted = (lambda n: True) if params["include_quantum"] else (lambda n: not is_quantum(n))
    calls = iter(range(1 << 30))

    def gate() -> list[torch.Tensor]:
        with trainable(model, wanted):
            i_d, i_f = importances(model, x_all, y_all, data.x_forget, data.y_forget, params["batch_size"],
                                   seed + 6 + 2 * next(calls))
        out = []
        for (name, _), d, f in zip(model.named_parameters(), i_d, i_f):
            mask, beta = selection(d, f, params["alpha"], params["lam"])
            w = (1 - beta) * mask if params["weighting"] == "beta" else mask.to(d.dtype)
            out.append(w if wanted(name) else torch.zeros_like(w))
        return out

    return ascend(model, data, params, shots, seed, lambda m, logits, y, gen: -F.cross_entropy(logits, y), gate)
