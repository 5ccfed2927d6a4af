"""`loss`: the loss-threshold attack (Yeom et al. 2018): lower loss, more likely a member. Trains on nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import metrics
from .base import AttackerView, Knowledge, Outputs, per_sample_loss, roc_report_columns

NAME = "loss"
LABEL = "loss attack"
ORDER = 2
COLUMNS = roc_report_columns("loss", "loss-attack")
ROC_PREFIX = "loss"
SCORE_COLUMN = None  # the examples table stores the loss itself
NEEDS_REFERENCES = False
PER_FORGET_SET = False  # fitted once per original model and eval shots, shared by every forget set


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def reference_queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    return {}, {}


def target_rows(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {role: -per_sample_loss(target.logits[role], target.labels[role]) for role in target.rows}


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    return metrics.roc_columns("loss", members, nonmembers)
