"""What every unlearning method receives and returns, and the audit helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..metrics import auc
from ..models import shots_mode
from ..models.training import Cost


# The unlearning trajectory (forget/retain/test accuracy, loss-attack AUC) is logged every AUDIT_EVERY
# steps for the first 20 points, then 4x less often every 20 points (`ascent.audit_stride`): 25 points for
# GA's ~180 steps on hqnn-l1, 49 for GradDiff's 1,178 (class:4) and 66 for its 3,531 (random:200), where
# one point every 25 steps logged 157, about 20 s of audit. Retain accuracy there and the held-out loss
# AUC (P_eval non-members) are read on strided subsamples of about AUDIT_RETAIN samples; the audit is
# outside the method's cost.
AUDIT_EVERY = 5
AUDIT_RETAIN = 300


@dataclass(frozen=True)
class Workload:
    """What a method's cost model sees: the model family, set sizes, recipe and the method's params."""

    family: str
    n_train: int
    n_forget: int
    recipe: dict[str, Any]
    params: dict[str, Any]
    shadow: bool = False  # one of U-LiRA's shadows, unlearning the forget samples it holds

    @property
    def n_retain(self) -> int:
        return self.n_train - self.n_forget


@dataclass(frozen=True)
class UnlearnData:
    """Retain and forget sets, the resolved stop target, and the test samples the audit reads.

    `x_heldout`/`y_heldout` are the forget set's held-out non-members (the P_eval samples the evaluate
    stage scores); `test_retain` marks the test samples of retained classes.
    """

    x_retain: torch.Tensor
    y_retain: torch.Tensor
    x_forget: torch.Tensor
    y_forget: torch.Tensor
    stop_acc: float
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    test_retain: torch.Tensor | None = None
    x_heldout: torch.Tensor | None = None
    y_heldout: torch.Tensor | None = None


@dataclass
class Outcome:
    model: nn.Module
    cost: Cost
    info: dict[str, float] = field(default_factory=dict)
    trajectory: list[dict[str, float]] = field(default_factory=list)


Fresh = Callable[[], nn.Module]
Run = Callable[[nn.Module, UnlearnData, dict[str, Any], dict[str, Any], "int | None", int, Fresh], Outcome]


def exact_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Exact outputs for the audit: no shots drawn, nothing added to the method's cost."""
    model.eval()
    with torch.no_grad(), shots_mode(model, None, None):
        return torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)]) if len(x) else x.new_zeros(0, 10)


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean()) if len(y) else float("nan")


def audit_point(model: nn.Module, data: UnlearnData, step: int) -> dict[str, float]:
    """One trajectory point: forget, retain and retained-class test accuracy, and the loss-attack AUC
    of the forget set against held-out non-members (exact outputs)."""
    lf = exact_logits(model, data.x_forget)
    every = max(1, len(data.y_retain) // AUDIT_RETAIN)  # a strided subsample keeps the audit cheap
    point = {"step": step, "forget_acc": _acc(lf, data.y_forget),
             "retain_acc": _acc(exact_logits(model, data.x_retain[::every]), data.y_retain[::every])}
    if data.x_test is not None:
        lt = exact_logits(model, data.x_test)
        point["test_acc"] = _acc(lt[data.test_retain], data.y_test[data.test_retain])
    if data.x_heldout is not None:
        loss_f = F.cross_entropy(lf, data.y_forget, reduction="none").numpy()
        every = max(1, len(data.y_heldout) // AUDIT_RETAIN)
        x_h, y_h = data.x_heldout[::every], data.y_heldout[::every]
        loss_h = F.cross_entropy(exact_logits(model, x_h), y_h, reduction="none").numpy()
        point["loss_auc"] = auc(-loss_f, -loss_h)
    return {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in point.items()}
