"""`study`: the study's attack, kept exactly so that `mia_success` stays comparable with its numbers.

Members are training samples (the forget set included), non-members test samples. Its AUC would be
scored on its own training data, so it reports only the recall the study published, with a Wilson interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import metrics
from ..seeds import derive_seed
from . import mlp
from .base import AttackerView, Knowledge, draw
from .mlp import fit_attack, no_rows

NAME = "study"
LABEL = "study MLP (the paper's protocol)"
ORDER = 0
# The report's columns of this attack: column -> (label, interval kind, count column); see docs/results.md.
COLUMNS = {"mia_success": ("MIA success, study protocol (forget set)", "row", None)}
ROC_PREFIX = None  # it scores no held-out non-members: no ROC
SCORE_COLUMN = "study_score"
NEEDS_REFERENCES = False
PER_FORGET_SET = False  # fitted once per original model and eval shots, shared by every forget set


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    p = know.params["attack"]
    return {"train": draw(know.sizes["train"], p["n_members"], derive_seed(know.seed, "attack-members")),
            "test": np.arange(min(p["n_nonmembers"], know.sizes["test"]))}


reference_queries = target_rows = no_rows
score = mlp.scorer(sort=False)


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    state, acc = fit_attack(view, queries(view.know), "train", "test", "attack-fit")
    return state, {"attack_train_acc": acc}


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    rate, lo, hi = metrics.rate(mlp.flagged(members, params["attack"]["threshold"]))
    return {"mia_success": rate, "mia_success_lo": lo, "mia_success_hi": hi}
