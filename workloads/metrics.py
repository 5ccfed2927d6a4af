"""Membership-inference and utility metrics."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """(rate, lower, upper) with the Wilson score interval; NaNs when n == 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # Clamp so that rounding never puts the rate outside its own interval (p = 0 or 1).
    return p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mia_success(flags: np.ndarray) -> tuple[float, float, float]:
    """Fraction of forget-set members flagged as members, with its 95% Wilson interval."""
    flags = np.asarray(flags, dtype=bool)
    return wilson_interval(int(flags.sum()), len(flags))


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return math.nan
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(y, np.r_[member_scores, nonmember_scores]))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `fpr` (0 when none does)."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return math.nan
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    f, t, _ = roc_curve(y, np.r_[member_scores, nonmember_scores])
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0
