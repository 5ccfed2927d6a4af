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
from .base import AttackerView, Knowledge, Outputs, draw
from .mlp import fit_mlp, mlp_scores

NAME = "study"
SCORE_COLUMN = "study_score"
NEEDS_REFERENCES = False


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    p = know.params["attack"]
    return {"train": draw(know.sizes["train"], p["n_members"], derive_seed(know.seed, "attack-members")),
            "test": np.arange(min(p["n_nonmembers"], know.sizes["test"]))}


def reference_queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    q = queries(view.know)
    state, acc = fit_mlp(view.original.at("train", q["train"]), view.original.at("test", q["test"]),
                         view.know.params["attack"], derive_seed(view.know.seed, "attack-fit"))
    # the rows it trained on travel with it, so that a test can check that none of them is ever scored
    state |= {"members_rows": torch.from_numpy(q["train"]), "nonmembers_rows": torch.from_numpy(q["test"])}
    return state, {"attack_train_acc": acc}


def target_rows(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {role: mlp_scores(state, params["attack"], target.logits[role], target.labels[role]) for role in target.rows}


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any]) -> dict[str, float]:
    rate, lo, hi = metrics.rate(members >= params["attack"]["threshold"])
    return {"mia_success": rate, "mia_success_lo": lo, "mia_success_hi": hi}
