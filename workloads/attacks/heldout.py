"""`heldout`: the study's MLP trained on what an attacker may know, scored only on samples it never saw.

Members are drawn from the retain set, non-members from P_attack, of the retained classes only, and the
MLP reads the output probabilities sorted (class-agnostic, as in ML-Leaks). With the forgotten class among
the non-members alone, the MLP learned "a 4 is a non-member" (AUC 0.41 on qnn-l10, class:4, `none`, seeds
0-2, where the loss attack's was 0.60); with the classes matched but probabilities by class, it had never
seen a confident 4 and scored every 4 as a certain non-member (AUC 0.500 on hqnn-l1, all scores 0).
It is scored on the forget set against held-out P_eval non-members, so its AUC, TPR and flag rates measure
leakage, not memorised features.
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

NAME = "heldout"
LABEL = "paper MLP attack"
ORDER = 1
COLUMNS = {"mia_recall_heldout": ("held-out recall (forget set)", "wilson", "n_members"),
           "mia_advantage": ("held-out advantage", "row", None),
           "mia_auc": ("attack AUC", "auc", None),
           "mia_tpr_at_1pct_fpr": ("TPR@1%FPR", "wilson", "n_members"),
           "mia_tpr_at_01pct_fpr": ("TPR@0.1%FPR", "wilson", "n_members"),
           "mia_nonmember_flag_rate": ("flag rate, unseen non-members", "wilson", "n_nonmembers"),
           "mia_fpr_floor": ("FPR floor", "none", None)}
ROC_PREFIX = "mia"
SCORE_COLUMN = "attack_score"
NEEDS_REFERENCES = False
PER_FORGET_SET = True  # its members come from the retain set: one fit per forget set


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    p = know.params["attack"]
    members = know.retain[draw(len(know.retain), p["n_members"], derive_seed(know.seed, "heldout-members"))]
    pool = np.flatnonzero(know.attack_labels != know.forget_class) if know.forget_class is not None \
        else np.arange(know.sizes["attack"])
    nonmembers = pool[draw(len(pool), p["n_nonmembers"], derive_seed(know.seed, "heldout-nonmembers"))]
    return {"train": np.sort(members), "attack": nonmembers}


reference_queries = target_rows = no_rows
score = mlp.scorer(sort=True)


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    state, acc = fit_attack(view, queries(view.know), "train", "attack", "heldout-fit", sort=True)
    return state, {"heldout_train_acc": acc}


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any]) -> dict[str, float]:
    m, n = (mlp.flagged(x, params["attack"]["threshold"]) for x in (members, nonmembers))
    adv, lo, hi = metrics.rate_difference(m, n)
    return {"mia_recall_heldout": metrics.rate(m)[0],
            "mia_nonmember_flag_rate": metrics.rate(n)[0],
            "mia_advantage": adv, "mia_advantage_lo": lo, "mia_advantage_hi": hi,
            **metrics.roc_columns("mia", members, nonmembers)}
