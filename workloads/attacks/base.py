"""What an attack sees: a model's outputs on rows of the data roles, and the attacker's knowledge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Outputs:
    """A model's logits on some rows of each data role (train, test, attack, eval).

    `rows[role]` are positions within the role (as in `workloads.data.Split`); `logits[role]` and
    `labels[role]` are aligned with them.
    """

    rows: dict[str, np.ndarray]
    logits: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]

    def only(self, **rows: np.ndarray) -> "Outputs":
        """These outputs with the named roles cut down to `rows` (which must all have been queried)."""
        logits, labels = dict(self.logits), dict(self.labels)
        for role, r in rows.items():
            logits[role], labels[role] = self.at(role, r)
        return Outputs({**self.rows, **rows}, logits, labels)

    def at(self, role: str, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of the given positions of `role`, which must all have been queried."""
        pos = np.searchsorted(self.rows[role], rows)
        if len(rows) and (pos.max() >= len(self.rows[role]) or not np.array_equal(self.rows[role][pos], rows)):
            raise KeyError(f"rows of role {role!r} that were not queried")
        return self.logits[role][pos], self.labels[role][pos]


@dataclass(frozen=True)
class Knowledge:
    """What the attacker knows when it fits: sizes of the roles, the retain/forget split, its params, seed,
    the labels of its own population data (P_attack) and the forgotten class, if any."""

    sizes: dict[str, int]
    retain: np.ndarray
    forget: np.ndarray
    params: dict[str, dict[str, Any]]
    seed: int
    attack_labels: np.ndarray
    forget_class: int | None = None


@dataclass(frozen=True)
class AttackerView:
    """The knowledge plus the original model's outputs and, when there are any, the reference models'."""

    know: Knowledge
    original: Outputs
    references: tuple[Outputs, ...] = ()
    # role -> positions each reference trained on: {"attack": ...} offline, {"train": ..., "eval": ...} online
    reference_members: tuple[dict[str, np.ndarray], ...] = ()


def features(logits: torch.Tensor, labels: torch.Tensor, sort: bool = False) -> torch.Tensor:
    """The study's 13 features per sample: 10 softmax probabilities, max probability, correctness, loss.

    sort: the probabilities in descending order instead of by class (ML-Leaks, Salem et al. 2019), so that
    an attack trained on some classes reads any class the same way."""
    probs = F.softmax(logits, dim=1)
    if sort:
        probs = probs.sort(dim=1, descending=True).values
    loss = F.cross_entropy(logits, labels, reduction="none")
    correct = (logits.argmax(1) == labels).to(probs.dtype)
    return torch.cat([probs, probs.max(1).values[:, None], correct[:, None], loss[:, None]], dim=1)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return F.cross_entropy(logits, labels, reduction="none").numpy()


def true_label_prob(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).numpy()


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed stably from log-softmax (LiRA's statistic)."""
    logp = F.log_softmax(logits, dim=1)
    lp_y = logp.gather(1, labels[:, None]).squeeze(1)
    others = logp.clone()
    others[torch.arange(len(labels)), labels] = -torch.inf
    return (lp_y - torch.logsumexp(others, dim=1)).numpy()


def draw(n: int, k: int, seed: int) -> np.ndarray:
    """k sorted positions out of n (all when k >= n), drawn with `seed`."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def roc_report_columns(prefix: str, label: str) -> dict[str, tuple[str, str, str | None]]:
    """The report's columns of an attack scored by ROC: its AUC and its TPR at 1% FPR."""
    return {f"{prefix}_auc": (f"{label} AUC", "auc", None),
            f"{prefix}_tpr_at_1pct_fpr": (f"{label} TPR@1%FPR", "wilson", "n_members")}
