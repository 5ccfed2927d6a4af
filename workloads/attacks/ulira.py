"""`ulira`: U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false sense
of privacy", SaTML 2025), a per-example attack on unlearning.

K shadow models train on halves of the shadow pool (P_attack plus the target's forget set; shadows come in
complementary pairs, so each forget sample is IN exactly half of them), and each is unlearned with the
cell's method on the forget samples it holds (the `shadow` and `ulira` stages). Per forget sample x,
Gaussians are fit to the logit-scaled confidence of the shadows that held x and unlearned it, and of those
that never saw it. The score of x on a model is the log likelihood ratio of the two. The attacker must tell
the cell's unlearned model (positives) from a model retrained without x (negatives: a `retrain` replica
with another initialisation, the `replica` stage): `ulira_accuracy` 0.5 means unlearning is
indistinguishable from retraining, per example.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import metrics
from ..params import Param
from ..seeds import derive_seed
from .base import AttackerView, Knowledge, Outputs, logit_confidence

NAME = "ulira"
LABEL = "U-LiRA"
ORDER = 5
COLUMNS = {"ulira_accuracy": ("U-LiRA accuracy (0.5 = as retrained)", "row", None),
           "ulira_auc": ("U-LiRA AUC", "auc", None),
           "ulira_tpr_at_1pct_fpr": ("U-LiRA TPR@1%FPR", "wilson", "n_members")}
ROC_PREFIX = "ulira"
SCORE_COLUMN = "ulira_score"
NEEDS_REFERENCES = False
NEEDS_SHADOWS = True  # fit from the `ulira` stage's unlearned shadows; its non-members are a retrained model's
PER_FORGET_SET = True
# The `ulira` section: K shadow models (0: off; even, complementary pairs). With fewer than 64 shadows LiRA
# fits one variance per group across samples (Carlini et al., "fixed variance"): per-sample variances from
# 4-8 shadows each are too noisy to trust.
SECTION = "ulira"
PARAMS = {"k": Param(0, 0, 256)}
MIN_SD = 1e-3  # a floor on the Gaussians' scale: identical confidences would give an infinite ratio


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


reference_queries = target_rows = queries


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    raise TypeError("ulira is fit from its shadow models (from_shadows), not in an attack stage")


def shadow_members(n_pool: int, seed: int, k: int) -> np.ndarray:
    """[k, n_pool] membership of the shadow pool: pair j splits it in two seeded halves."""
    out = np.zeros((k, n_pool), bool)
    for j in range(k // 2):
        order = np.random.default_rng(derive_seed(seed, "ulira-pair", j)).permutation(n_pool)
        out[2 * j, order[: n_pool // 2]] = True
        out[2 * j + 1, order[n_pool // 2:]] = True
    return out


def from_shadows(conf: np.ndarray, held: np.ndarray, forget_rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Per forget sample, the means of the unlearned-IN and the OUT shadows' confidences, and one scale
    per group (conf, held: [k, n_forget]; forget_rows: the forget samples' positions in the train role)."""
    order = np.argsort(forget_rows, kind="stable")  # `score` looks samples up by position
    conf, held, forget_rows = conf[:, order], held[:, order], forget_rows[order]
    def stats(mask: np.ndarray) -> tuple[np.ndarray, float]:
        n = mask.sum(0)
        mean = np.where(n > 0, (conf * mask).sum(0) / np.maximum(n, 1), np.nan)
        resid = (conf - mean) * mask
        dof = max(1, int(n.sum() - (n > 0).sum()))
        return mean, max(MIN_SD, float(np.sqrt((resid**2).sum() / dof)))

    mu_in, sd_in = stats(held)
    mu_out, sd_out = stats(~held)
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
    return {"mu_in": t(mu_in), "mu_out": t(mu_out), "sd": t([sd_in, sd_out]),
            "forget_rows": torch.from_numpy(forget_rows.astype(np.int64)), "k": t(len(conf))}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """log N(c; mu_in, sd_in) - log N(c; mu_out, sd_out) of each queried forget sample; NaN elsewhere."""
    out = {role: np.full(len(rows), np.nan) for role, rows in target.rows.items()}
    if "train" not in target.rows:
        return out
    rows = state["forget_rows"].numpy()
    at = np.isin(target.rows["train"], rows)
    c = logit_confidence(target.logits["train"][at], target.labels["train"][at])
    j = np.searchsorted(rows, target.rows["train"][at])
    sd_in, sd_out = state["sd"].numpy()
    z_in = (c - state["mu_in"].numpy()[j]) / sd_in
    z_out = (c - state["mu_out"].numpy()[j]) / sd_out
    out["train"][at] = -0.5 * z_in**2 - np.log(sd_in) + 0.5 * z_out**2 + np.log(sd_out)
    return out


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    """members: scores on the unlearned model; nonmembers: on the retrained one, same forget samples.
    Balanced accuracy of "unlearned" at a ratio above 1, with a Wilson interval (as many of each)."""
    ok = ~np.isnan(members) & ~np.isnan(nonmembers)
    pos, neg = members[ok], nonmembers[ok]
    correct = np.r_[pos > 0, neg <= 0]
    acc, lo, hi = metrics.rate(correct)
    return {"ulira_accuracy": acc, "ulira_accuracy_lo": lo, "ulira_accuracy_hi": hi,
            **metrics.roc_columns("ulira", pos, neg), "ulira_fpr_floor": metrics.fpr_floor(len(neg)),
            "ulira_k": int(state["k"])}
