"""`salun` (SalUn, Fan et al., ICLR 2024): weight saliency, then random-label fine-tuning of the salient
weights only. The saliency of a weight is |d CE(forget set) / d weight|; the mask keeps the `sparsity`
share with the largest saliency over the whole model (angles included: an angle's gradient is its
saliency like any weight's), and RL's steps move only those."""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from ..models import shots_mode
from ..models.training import Cost
from ..params import Param, positive_int, rate
from .base import Outcome, Workload
from .descent import descend, n_classes, random_labels
from .random_label import relabelled_loss

NAME = "salun"
LABEL = "SalUn"
ORDER = 10
SUMMARY = "random-label fine-tuning of the weights most salient to the forget loss (SalUn)"
TOUCHES = ("front end", "angles", "head")
# Tuned (benchmarks/tune.py, hqnn-l1 class:4, seeds 100-102; benchmarks/tuning/hqnn-l1-class4.json): sparsity
# 0.5 (SalUn's default mask ratio), 10 epochs, lr 0.01: forget accuracy 0.000, validation 0.909 against 0.923
# (gap 0.015); the best with sparsity 0.1 was 0.018, 5 epochs 0.033-0.073.
PARAMS = {"sparsity": Param(0.5, 0.0, 1.0, open_low=True), "epochs": positive_int(10, 1000), "lr": rate(0.01),
          "momentum": Param(0.9, 0.0, 1.0, open_high=True), "batch_size": positive_int(16, 4096)}


def passes(w: Workload) -> float:
    return w.n_forget + 2 * w.n_forget * w.params["epochs"]  # the saliency gradient, then RL's steps


def saliency_mask(model, x, y, keep: float, shots, seed) -> tuple[list[torch.Tensor], Cost]:
    """1 on the `keep` share of weights with the largest |gradient of the forget loss|, 0 elsewhere; and
    the cost of that gradient."""
    start = time.perf_counter()
    model.zero_grad()
    with shots_mode(model, shots, torch.Generator().manual_seed(seed + 19)) as log:
        model.eval()
        F.cross_entropy(model(x), y).backward()
    grads = [p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad()
    flat = torch.cat([g.flatten() for g in grads])
    k = max(1, int(round(keep * flat.numel())))
    threshold = torch.topk(flat, k).values[-1]
    return [(g >= threshold).to(g.dtype) for g in grads], Cost.of(time.perf_counter() - start, log)


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    mask, cost = saliency_mask(model, data.x_forget, data.y_forget, params["sparsity"], shots, seed)
    labels = random_labels(data.y_forget, n_classes(model), seed)
    cost += descend(model, len(data.y_forget), params, shots, seed, relabelled_loss(data, labels, params["batch_size"]),
                    weights=mask)
    return Outcome(model, cost)
