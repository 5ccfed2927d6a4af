"""`lira`: LiRA (Carlini et al. 2022), offline against OUT reference models trained on halves of P_attack, or
online (`references.mode: online`) against references trained on halves of the scored samples themselves.

Offline, every target sample is OUT for every reference. Per sample, the references' logit confidences
phi = log p_y - log(1 - p_y) give an OUT mean; with few references one global OUT variance is steadier
than per-sample ones (the paper's advice). The score is the z-statistic (phi - mu_OUT) / sigma_OUT, so
large means member; its one-sided p-value under OUT is scipy.special.ndtr(-z). Scoring z itself, not the
p-value, keeps strong members from tying at 1.0.

Online, each target sample is IN exactly half of the references. Per sample, the IN and the OUT references'
phi give two means; one global IN variance and one global OUT variance (pooled over samples: with 2 to 8
references per side a per-sample variance is noise, the paper's fixed-variance advice). The score is the
log-likelihood ratio log N(phi; mu_IN, sigma_IN) - log N(phi; mu_OUT, sigma_OUT).
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
    if view.know.params["references"]["mode"] == "online":
        return _fit_online(phi, view.reference_members), {}
    mu = {r: p.mean(axis=0) for r, p in phi.items()}
    k = len(view.references)
    resid = np.concatenate([(phi[r] - mu[r]).ravel() for r in TARGETS])
    sigma = float(np.sqrt((resid**2).mean() * k / (k - 1))) if k > 1 else 1.0
    state = {f"mu_{r}": torch.from_numpy(mu[r]) for r in TARGETS}
    state["sigma"] = torch.tensor([max(sigma, 1e-6)], dtype=torch.float64)
    return state, {}


def _fit_online(phi: dict[str, np.ndarray], members: tuple[dict[str, np.ndarray], ...]) -> dict[str, torch.Tensor]:
    """Per-sample IN and OUT means, and a pooled IN and OUT variance (phi: role -> [references, samples])."""
    held = {r: np.stack([np.isin(np.arange(p.shape[1]), m.get(r, ())) for m in members]) for r, p in phi.items()}
    state: dict[str, torch.Tensor] = {}
    for side, inside in (("in", True), ("out", False)):
        mask = {r: h == inside for r, h in held.items()}
        if any((m.sum(0) < 2).any() for m in mask.values()):
            raise ValueError(f"lira: online references must hold every scored sample {side.upper()} of at least two")
        mu = {r: (phi[r] * mask[r]).sum(0) / mask[r].sum(0) for r in phi}
        squares = sum(float((((phi[r] - mu[r]) * mask[r]) ** 2).sum()) for r in phi)
        dof = sum(int((mask[r].sum(0) - 1).sum()) for r in phi)  # unbiased: one mean per sample and side
        state.update({f"mu_{side}_{r}": torch.from_numpy(mu[r]) for r in phi})
        state[f"sigma_{side}"] = torch.tensor([max(np.sqrt(squares / dof), 1e-6)], dtype=torch.float64)
    return state


def target_rows(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for role, rows in target.rows.items():
        if role not in TARGETS:
            out[role] = np.full(len(rows), np.nan)
            continue
        phi = logit_confidence(target.logits[role], target.labels[role])
        if "sigma_in" in state:  # online: the likelihood ratio of IN against OUT
            out[role] = _log_normal(phi, state, "in", role, rows) - _log_normal(phi, state, "out", role, rows)
        else:
            out[role] = (phi - state[f"mu_{role}"].numpy()[rows]) / float(state["sigma"][0])
    return out


def _log_normal(phi: np.ndarray, state: dict[str, torch.Tensor], side: str, role: str, rows: np.ndarray) -> np.ndarray:
    """log N(phi; mu_side, sigma_side) of the given rows, without the constant that cancels in the ratio."""
    sigma = float(state[f"sigma_{side}"][0])
    return -0.5 * ((phi - state[f"mu_{side}_{role}"].numpy()[rows]) / sigma) ** 2 - np.log(sigma)


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {**metrics.roc_columns("lira", members, nonmembers), "references_mode": params["references"]["mode"]}
