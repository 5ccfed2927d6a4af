"""Offline LiRA (Carlini et al. 2022): per-example likelihood ratio against OUT shadow models.

Shadows train on the population (samples in neither the target's train nor test set), so every
target example is OUT for every shadow. With few shadows a single global variance is more
stable than per-example ones (the paper's recommendation), so that is what we fit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed stably from log-softmax."""
    logp = F.log_softmax(logits, dim=1)
    lp_y = logp.gather(1, labels[:, None]).squeeze(1)
    others = logp.clone()
    others[torch.arange(len(labels)), labels] = -torch.inf
    return (lp_y - torch.logsumexp(others, dim=1)).numpy()


def out_distribution(phi_shadows: np.ndarray) -> tuple[np.ndarray, float]:
    """(per-example OUT mean, global OUT std) from (K, n) shadow confidences."""
    mu = phi_shadows.mean(axis=0)
    sigma = float(np.sqrt(((phi_shadows - mu) ** 2).mean())) if phi_shadows.shape[0] > 1 else 1.0
    return mu, max(sigma, 1e-6)


def lira_scores(phi: np.ndarray, mu: np.ndarray, sigma: float) -> np.ndarray:
    """Membership score: P(phi_OUT < phi) under the fitted Gaussian (higher means member)."""
    z = (phi - mu) / sigma
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
