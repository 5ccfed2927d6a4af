"""`graddiff` (the literature's GradDiff): each step descends on a retain batch and ascends on a
forget batch, loss = CE(retain) - gamma * CE(forget), until the stop rule fires."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .ascent import ascend
from .base import Outcome


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    def loss(m, logits, y, gen):
        r = torch.randint(len(data.y_retain), (params["batch_size"],), generator=gen)
        return -params["gamma"] * F.cross_entropy(logits, y) + F.cross_entropy(m(data.x_retain[r]), data.y_retain[r])

    return ascend(model, data, params, shots, seed, loss)
