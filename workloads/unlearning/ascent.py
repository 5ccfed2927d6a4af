"""The loop shared by GA, RGA and GradDiff: ascend on forget batches until a cheap stop rule fires.

The stop rule reads forget-set accuracy at the unlearning shots, either on the forget batch the step
is about to use (`batch`: its forward pass is needed anyway, so the check is free), on a fixed
subsample of at most `stop_subsample` forget samples (`subsample`), or on the whole forget set
(`full`), every `stop_every` steps. The trajectory is an audit on exact outputs, outside the cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..params import Param, positive_int
from ..models import shots_mode
from ..models.training import Cost, batches, sgd
from .base import AUDIT_EVERY, Outcome, UnlearnData, Workload, audit_point

# The stop rule every ascent method shares. "auto" is 0.1 for class forgetting and, for random forgetting,
# the original model's accuracy on the validation split (the level retrain would reach). Measured on
# hqnn-l1 class:4 (MNIST, n_train 1000, seed 0): `subsample` (64 fixed forget samples, every step) stopped
# GA at the same step (181) as `batch` (the step's own batch, free) for 0.8% more device circuits (1.421 M
# vs 1.409 M); its estimate is half as noisy (sd 0.04 vs 0.08 at accuracy 0.9), which matters for random
# forgetting. The old full pass before every step was 75-85% of the simulator's executions. Checking less
# often is not an option: a full pass every 5 steps stopped GA at step 185 instead of 181, after the
# collapse, with retained-class test accuracy 0.23 instead of 0.84.
STOP_PARAMS: dict[str, Param] = {
    "stop_acc": Param("auto", low=0.0, high=1.0, also=("auto",), kind=float),
    "stop_rule": Param("subsample", choices=("batch", "subsample", "full")),
    "stop_every": positive_int(1),
    "stop_subsample": positive_int(64),
}


def ascent_passes(w: Workload, steps: dict[str, int], retain_batches: int = 0,
                  shadow_steps: dict[str, int] | None = None) -> float:
    """Sample passes of an ascent to its stop rule: `steps[family]` steps (measured, see each method; a
    shadow's from `shadow_steps` where measured), each a forget batch plus `retain_batches` retain batches,
    and every `stop_every` steps the stop rule's forward pass over `stop_subsample` forget samples (a forward
    pass costs about a third of a training pass)."""
    if w.shadow and shadow_steps:
        steps = {**steps, **shadow_steps}
    p = w.params
    per_step = p["batch_size"] * (1 + retain_batches)
    if p["stop_rule"] == "subsample":
        per_step += p["stop_subsample"] / 3 / p["stop_every"]
    elif p["stop_rule"] == "full":
        per_step += w.n_forget / 3 / p["stop_every"]
    return steps.get(w.family, max(steps.values())) * per_step


# (model, forget logits, forget labels, generator) -> the loss to minimise.
StepLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
# () -> per-parameter gradient weights (None: every parameter moves freely).
Gate = Callable[[], "list[torch.Tensor] | None"]


@dataclass(frozen=True)
class Objective:
    """An ascent's loss, `forget * CE(forget batch) + retain * CE(retain batch)`, the retain batch being
    `batch_size` retain samples drawn with replacement from the ascent's generator after the forward pass."""

    forget: float
    retain: float = 0.0

    def step_loss(self, data: UnlearnData, batch_size: int) -> StepLoss:
        def loss(m: nn.Module, logits: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            out = self.forget * F.cross_entropy(logits, y)
            if self.retain:
                r = torch.randint(len(data.y_retain), (batch_size,), generator=gen)
                out = out + self.retain * F.cross_entropy(m(data.x_retain[r]), data.y_retain[r])
            return out

        return loss


def describe_stop(params: dict[str, Any], stop_acc: float | str) -> str:
    """The recorded stop rule, e.g. `forget_acc<=0.1 on subsample:64 every 1 steps, max_epochs 60`."""
    where = {"batch": "the step's batch", "subsample": f"subsample:{params['stop_subsample']}",
             "full": "the forget set"}[params["stop_rule"]]
    return f"forget_acc<={stop_acc} on {where} every {params['stop_every']} steps, max_epochs {params['max_epochs']}"


def audit_stride(points: int) -> int:
    """Steps between trajectory points once `points` are logged: AUDIT_EVERY for the first 20 after the
    start, then 4x longer every 20 points, so a long run logs a few dozen points, not hundreds."""
    return AUDIT_EVERY * 4 ** ((points - 1) // 20)


def _batch_acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.detach().argmax(1) == y).double().mean())


def stop_rows(n_forget: int, params: dict[str, Any], seed: int) -> torch.Tensor:
    """The forget rows the stop rule reads (`subsample`: the first `stop_subsample` of a permutation seeded
    seed + 8; otherwise all of them, in that order)."""
    sub = torch.randperm(n_forget, generator=torch.Generator().manual_seed(seed + 8))
    return sub[: params["stop_subsample"]] if params["stop_rule"] == "subsample" else sub


def ascend(model: nn.Module, data: UnlearnData, params: dict[str, Any], shots: int | None, seed: int,
           step_loss: StepLoss, gate: Gate | None = None) -> Outcome:
    gen = torch.Generator().manual_seed(seed + 2)
    shot_gen = torch.Generator().manual_seed(seed + 3)
    sub = stop_rows(len(data.y_forget), params, seed)
    opt = sgd(model, {**params, "nesterov": False})
    refresh = params.get("refresh_every", 0)
    steps, stop, audit_s, trajectory = 0, "max_epochs", 0.0, []
    start = time.perf_counter()

    def audit() -> None:
        nonlocal audit_s
        t = time.perf_counter()
        trajectory.append(audit_point(model, data, steps))
        audit_s += time.perf_counter() - t

    saved = [p.requires_grad for p in model.parameters()]
    with shots_mode(model, shots, shot_gen) as log:
        weights = _gated(model, gate)
        audit()
        for _ in range(params["max_epochs"] if weights is None or any(p.requires_grad for p in model.parameters()) else 0):
            for idx in batches(len(data.y_forget), params["batch_size"], gen):
                check = steps % params["stop_every"] == 0
                if check and params["stop_rule"] != "batch" and _check(model, data, sub) <= data.stop_acc:
                    stop = "target"
                    break
                model.train()
                opt.zero_grad()
                logits = model(data.x_forget[idx])
                if check and params["stop_rule"] == "batch" and _batch_acc(logits, data.y_forget[idx]) <= data.stop_acc:
                    stop = "target"
                    break
                step_loss(model, logits, data.y_forget[idx], gen).backward()
                if weights is not None:
                    for p, w in zip(model.parameters(), weights):
                        if p.grad is not None:
                            p.grad.mul_(w)
                opt.step()
                steps += 1
                if refresh and gate and steps % refresh == 0:
                    weights = _gated(model, gate)
                    if not any(p.requires_grad for p in model.parameters()):
                        break
                if steps % audit_stride(len(trajectory)) == 0:
                    audit()
            else:
                continue
            break
        if trajectory[-1]["step"] != steps:
            audit()
    for p, r in zip(model.parameters(), saved):
        p.requires_grad_(r)
    cost = Cost.of(time.perf_counter() - start - audit_s, log)
    info = {"unlearn_steps": float(steps), "unlearn_reached_target": float(stop == "target"),
            "forget_acc_at_stop": trajectory[-1]["forget_acc"]}
    return Outcome(model, cost, info, trajectory)


def _gated(model: nn.Module, gate: Gate | None) -> "list[torch.Tensor] | None":
    """The gate's weights; a parameter whose weights are all zero takes no gradient (no shift circuits)."""
    weights = gate() if gate else None
    if weights is not None:
        for p, w in zip(model.parameters(), weights):
            p.requires_grad_(bool(w.any()))
    return weights


def _check(model: nn.Module, data: UnlearnData, idx: torch.Tensor) -> float:
    """Forget accuracy on `idx` at the unlearning shots (these forward circuits count)."""
    model.eval()
    with torch.no_grad():
        return _batch_acc(model(data.x_forget[idx]), data.y_forget[idx])
