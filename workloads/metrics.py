"""Membership-inference and utility metrics: rates with Wilson intervals, AUC, TPR at a fixed FPR."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(rate, lower, upper) with the Wilson score interval; NaNs when n == 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # Clamp so that rounding never puts the rate outside its own interval (p = 0 or 1).
    return p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def rate(flags: np.ndarray) -> tuple[float, float, float]:
    """Fraction of True flags with its 95% Wilson interval. Flags may be probabilities in [0, 1] (a
    randomised decision at a tied threshold): the rate is then the expected fraction."""
    flags = np.asarray(flags, dtype=np.float64)
    return wilson_interval(float(flags.sum()), len(flags))


mia_success = rate  # the study's number: the fraction of the forget set flagged as member


def rate_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """rate(a) - rate(b) of two independent samples with Newcombe's 95% interval (hybrid Wilson score)."""
    pa, la, ua = rate(a)
    pb, lb, ub = rate(b)
    if math.isnan(pa) or math.isnan(pb):
        return math.nan, math.nan, math.nan
    d = pa - pb
    return d, d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return math.nan
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(y, np.r_[member_scores, nonmember_scores]))


def fpr_floor(n_nonmembers: int) -> float:
    """The smallest non-zero false-positive rate that n non-members can resolve."""
    return 1.0 / n_nonmembers if n_nonmembers else math.nan


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """Highest TPR at a threshold whose FPR does not exceed `fpr`; NaN when the non-members cannot
    resolve `fpr` (it is below 1/n) or either side is empty."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0 or fpr < fpr_floor(len(nonmember_scores)) - 1e-12:
        return math.nan
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    # Every threshold: the default drops points on straight stretches of the curve, and with tied scores the
    # dropped point can be the last one at or below `fpr`, which understates the TPR there.
    f, t, _ = roc_curve(y, np.r_[member_scores, nonmember_scores], drop_intermediate=False)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def roc_columns(prefix: str, members: np.ndarray, nonmembers: np.ndarray) -> dict[str, float]:
    """`{prefix}_auc`, `{prefix}_tpr_at_1pct_fpr`, `{prefix}_tpr_at_01pct_fpr` of one attack's scores."""
    return {f"{prefix}_auc": auc(members, nonmembers),
            f"{prefix}_tpr_at_1pct_fpr": tpr_at_fpr(members, nonmembers, 0.01),
            f"{prefix}_tpr_at_01pct_fpr": tpr_at_fpr(members, nonmembers, 0.001)}


def output_distances(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> tuple[float, float]:
    """(mean KL(p || q) in nats, mean Jensen-Shannon distance in base 2) of two models' output probabilities
    on the same samples, rows aligned; probabilities are floored at `eps` as the report's SQL does."""
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    m = (p + q) / 2
    kl = lambda a, b: (a * np.log(a / b)).sum(1)  # noqa: E731
    js = np.sqrt(np.maximum(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)) / math.log(2))
    return float(kl(p, q).mean()), float(js.mean())
