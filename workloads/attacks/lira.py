"""`lira`: offline LiRA (Carlini et al. 2022) against OUT reference models trained on halves of P_attack.

Every target sample is OUT for every reference. Per sample, the references' logit confidences
phi = log p_y - log(1 - p_y) give an OUT mean; with few references one global OUT variance is steadier
than per-sample ones (the paper's advice). The score is the z-statistic (phi - mu_OUT) / sigma_OUT, so
large means member; its one-sided p-value under OUT is scipy.special.ndtr(-z). Scoring z itself, not the
p-value, keeps strong members from tying at 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import metrics
from .base import AttackerView, Knowledge, Outputs, logit_confidence, roc_report_columns

NAME = "lira"
LABEL = "LiRA"
ORDER = 4
COLUMNS = roc_report_columns("lira", "LiRA")
ROC_PREFIX = "lira"
SCORE_COLUMN = "lira_score"
NEEDS_REFERENCES = True
PER_FORGET_SET = False  # fitted once per original model and eval shots, shared by every forget set
TARGETS = ("train", "eval")


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def reference_queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {r: np.arange(know.sizes[r]) for r in TARGETS}


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    phi = {r: np.stack([logit_confidence(*ref.at(r, np.arange(view.know.sizes[r]))) for ref in view.references])
           for r in TARGETS}
    mu = {r: p.mean(axis=0) for r, p in phi.items()}
    k = len(view.references)
    resid = np.concatenate([(phi[r] - mu[r]).ravel() for r in TARGETS])
    sigma = float(np.sqrt((resid**2).mean() * k / (k - 1))) if k > 1 else 1.0
    state = {f"mu_{r}": torch.from_numpy(mu[r]) for r in TARGETS}
    state["sigma"] = torch.tensor([max(sigma, 1e-6)], dtype=torch.float64)
    return state, {}


def target_rows(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    sigma = float(state["sigma"][0])
    out = {}
    for role, rows in target.rows.items():
        if role not in TARGETS:
            out[role] = np.full(len(rows), np.nan)
            continue
        phi = logit_confidence(target.logits[role], target.labels[role])
        out[role] = (phi - state[f"mu_{role}"].numpy()[rows]) / sigma
    return out


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    return metrics.roc_columns("lira", members, nonmembers)
