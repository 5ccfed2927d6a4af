"""Relearning robustness: how fast does an unlearned model get the forget set back?

A copy is fine-tuned with the training recipe's optimiser on a seeded `fraction` of the forget set;
the count is the steps until accuracy on the rest of the forget set reaches half of the original
model's. A model that truly forgot relearns about as slowly as `retrain`, which never saw the data.
Exact outputs and autograd: an audit on the simulator, not part of the method's cost.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..models.training import batches, sgd
from ..params import Param, positive_int
from .base import exact_logits

# The `relearn` section of a grid's params. On hqnn-l1 GA, RGA and SSD relearn in 2-3 steps and retrain,
# which never saw the forget set, in 9 (lr 0.1, batch 8, on 10 samples); a bound of 100 leaves room for
# slower learners (qnn-l10 trains at lr 0.05) without making the check expensive.
PARAMS = {"fraction": Param(0.1, 0.0, 1.0, open_low=True), "max_steps": positive_int(100, 100_000)}


def split_forget(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(relearn indices, held-back indices) of the forget set."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, round(fraction * n))
    return order[:k], order[k:]


def relearn_steps(original: nn.Module, unlearned: nn.Module, x_forget: torch.Tensor, y_forget: torch.Tensor,
                  recipe: dict[str, Any], fraction: float, bound: int, seed: int) -> int | None:
    """Steps until held-back forget accuracy is at least half the original's; None if not within `bound`."""
    if len(y_forget) < 2:
        return None
    learn, rest = split_forget(len(y_forget), fraction, seed)
    acc = lambda m: float((exact_logits(m, x_forget[rest]).argmax(1) == y_forget[rest]).double().mean())  # noqa: E731
    target = acc(original) / 2
    model = copy.deepcopy(unlearned)
    opt = sgd(model, recipe)
    gen = torch.Generator().manual_seed(seed + 1)
    steps = 0
    while True:
        if acc(model) >= target:
            return steps
        if steps >= bound:
            return None
        for idx in batches(len(learn), recipe["batch_size"], gen):
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x_forget[learn[idx]]), y_forget[learn[idx]]).backward()
            opt.step()
            steps += 1
            if steps >= bound or acc(model) >= target:
                break
