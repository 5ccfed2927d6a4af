"""`ascent.ascend` for K models of one architecture in lockstep (U-LiRA's shadows, each unlearning the forget
samples it holds).

Model k takes the steps `ascend` takes alone with seeds[k]: its own forget batches, retain draws, stop
subsample and gate weights, and it stops when its own stop rule fires while the others go on. Its weights
end equal to the model unlearned alone to rounding (tests/test_ascent_many.py), as long as the ascent is
stable: one that runs on past where it should have stopped diverges, and amplifies the rounding of any two
ways of computing it (hqnn-l1 GA run to max_epochs: 2e-15 apart after 40 steps, 6e-10 after 80, 2 after 120,
its weights growing from 6 to 55). The work per step is shared as in `train_many`: one stacked forward and
backward for all K (models/batched.py), the forget and retain batches in one pass. Exact outputs only, gates
computed once (`refresh_every` 0), and no audit trajectory: a shadow is scored on its final outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..models.batched import StackedModels
from ..models.training import SGD, batches
from .ascent import Gate, Objective, stop_rows
from .base import UnlearnData


@dataclass
class _Lane:
    """One model's ascent: its data, generator, batch stream and stop subsample."""

    data: UnlearnData
    gen: torch.Generator
    stream: Iterator[torch.Tensor]
    sub: torch.Tensor
    steps: int = 0
    stop: str | None = None


def _lane(data: UnlearnData, params: dict[str, Any], seed: int) -> _Lane:
    """The draws `ascend` makes from `seed`, in its order."""
    gen = torch.Generator().manual_seed(seed + 2)
    sub = stop_rows(len(data.y_forget), params, seed)

    def stream() -> Iterator[torch.Tensor]:
        for _ in range(params["max_epochs"]):
            yield from batches(len(data.y_forget), params["batch_size"], gen)

    return _Lane(data, gen, stream(), sub)


def ascend_many(models: Sequence[nn.Module], datas: Sequence[UnlearnData], params: dict[str, Any],
                seeds: Sequence[int], objective: Objective, gates: Sequence[Gate] | None = None
                ) -> list[dict[str, float]]:
    """Unlearn models[k] in place on datas[k] as `ascend(models[k], datas[k], params, None, seeds[k],
    objective.step_loss(...), gates[k])` would; returns each model's steps and whether it reached its target."""
    all_lanes = [_lane(d, params, s) for d, s in zip(datas, seeds)]
    weights = _gate_weights(models, gates, all_lanes)
    group = _Group.of(models, [k for k, lane in enumerate(all_lanes) if lane.stop is None], weights, params)
    while group.members:
        lanes = [all_lanes[k] for k in group.members]
        active = torch.ones(len(lanes), dtype=torch.bool)
        _step(group, lanes, active, params, objective)
        if not bool(active.all()):
            group = group.keep(active, models, weights, params)
    return [{"unlearn_steps": float(lane.steps), "unlearn_reached_target": float(lane.stop == "target")}
            for lane in all_lanes]


@dataclass
class _Group:
    """The models still ascending, stacked. Those that stop leave it (`keep`), so that a step costs what the
    models still ascending cost: shadows stop far apart, and keeping the stopped ones in the stack made GA's
    ulira stage 0.81x as fast as one shadow after the other (hqnn-l1 class:4, 8 shadows); dropping them 1.3x."""

    members: list[int]
    stack: StackedModels | None
    opt: SGD | None
    weights: dict[str, torch.Tensor] | None

    @staticmethod
    def of(models: Sequence[nn.Module], members: list[int], weights: list | None, params: dict[str, Any]) -> "_Group":
        if not members:
            return _Group([], None, None, None)
        stack = StackedModels([models[k] for k in members])
        opt = SGD(stack.params, params["lr"], params["momentum"])
        stacked = None if weights is None else {
            name: torch.stack([weights[k][j] for k in members]) for j, name in enumerate(stack.params)}
        return _Group(members, stack, opt, stacked)

    def keep(self, active: torch.Tensor, models: Sequence[nn.Module], weights: list | None,
             params: dict[str, Any]) -> "_Group":
        """The group of the active members, their weights and momentum carried over; the others written back."""
        self.stack.write_back([models[k] for k in self.members])
        rows = active.nonzero().flatten()
        group = _Group.of(models, [self.members[i] for i in rows.tolist()], weights, params)
        if group.opt is not None:
            group.opt.buffers = {name: b[rows].clone() for name, b in self.opt.buffers.items()}
        return group


def _step(group: _Group, lanes: list[_Lane], active: torch.Tensor, params: dict[str, Any],
          objective: Objective) -> None:
    """One lockstep step: each lane's next batch, its stop rule, and the step of those that go on; a lane
    that stops is marked inactive in `active` and takes no step."""
    stack, opt = group.stack, group.opt
    idx = _next_batches(lanes, active)
    if not active.any():
        return
    check = lanes[0].steps % params["stop_every"] == 0  # the members started together and step together
    if check and params["stop_rule"] != "batch":
        _stop_reached(lanes, active, _accuracies(stack, lanes, active, [lane.sub for lane in lanes]))
        if not active.any():
            return
    opt.zero_grad()
    x, y, w = _rows(lanes, active, idx, "forget")
    if objective.retain:  # drawn before the stop check: a lane that stops never draws from its generator again
        draws = [torch.randint(len(lane.data.y_retain), (params["batch_size"],), generator=lane.gen)
                 if a else None for lane, a in zip(lanes, active.tolist())]
        xr, yr, wr = _rows(lanes, active, draws, "retain")
        x = torch.cat([x, xr], dim=1)  # one stacked pass for both batches
    logits = stack.logits(x)
    logits, retain_logits = logits[:, : y.shape[1]], logits[:, y.shape[1]:]
    if check and params["stop_rule"] == "batch":
        _stop_reached(lanes, active, _row_accuracies(logits, y, w))
        if not active.any():
            return
        w = w * active[:, None]
    loss = objective.forget * _mean_ce(logits, y, w)
    if objective.retain:
        loss = loss + objective.retain * _mean_ce(retain_logits, yr, wr * active[:, None])
    loss.backward()
    if group.weights is not None:
        for name, p in stack.params.items():
            p.grad.mul_(group.weights[name])
    opt.step(active)
    for lane, a in zip(lanes, active.tolist()):
        lane.steps += a


def _gate_weights(models: Sequence[nn.Module], gates: Sequence[Gate] | None,
                  lanes: list[_Lane]) -> list[list[torch.Tensor]] | None:
    """Each model's gate weights per parameter (ones where its gate is None); a model whose gate freezes every
    parameter takes no step (as `ascend` alone: it stops at max_epochs after 0 steps)."""
    if gates is None:
        return None
    out = []
    for model, gate, lane in zip(models, gates, lanes):
        w = gate()
        if w is not None and not any(bool(t.any()) for t in w):
            lane.stop = "max_epochs"
        out.append(w if w is not None else [torch.ones_like(p) for p in model.parameters()])
    return out


def _next_batches(lanes: list[_Lane], active: torch.Tensor) -> list[torch.Tensor | None]:
    """Each active model's next forget batch; a model whose epochs ran out stops (`max_epochs`)."""
    out: list[torch.Tensor | None] = []
    for k, lane in enumerate(lanes):
        idx = next(lane.stream, None) if active[k] else None
        if active[k] and idx is None:
            lane.stop, active[k] = "max_epochs", False
        out.append(idx)
    return out


def _rows(lanes: list[_Lane], active: torch.Tensor, idx: Sequence[torch.Tensor | None],
          role: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (K, R, ...), labels (K, R) and loss weights (K, R): 1 / n on model k's n rows, 0 on the
    padding (its first row) and on idle models."""
    none = torch.empty(0, dtype=torch.long)
    parts = [(lane.data.x_forget, lane.data.y_forget) if role == "forget" else (lane.data.x_retain, lane.data.y_retain)
             for lane in lanes]
    rows = [i if a and i is not None else none for i, a in zip(idx, active.tolist())]
    width = max(len(i) for i in rows)
    w = torch.zeros(len(lanes), width, dtype=torch.float64)
    xs, ys = [], []
    for k, ((x, y), i) in enumerate(zip(parts, rows)):
        pad = torch.zeros(width - len(i), dtype=torch.long)  # the model's first row, weight 0
        w[k, : len(i)] = 1.0 / len(i) if len(i) else 0.0
        xs.append(x[torch.cat([i, pad])])
        ys.append(y[torch.cat([i, pad])])
    return torch.stack(xs), torch.stack(ys), w


def _mean_ce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The sum over models of each model's mean cross-entropy on its rows."""
    return (F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none") * w.flatten()).sum()


def _accuracies(stack: StackedModels, lanes: list[_Lane], active: torch.Tensor,
                idx: Sequence[torch.Tensor]) -> list[float | None]:
    """Forget accuracy of each active model on its rows `idx[k]` (the stop rule's check; exact)."""
    x, y, w = _rows(lanes, active, idx, "forget")
    with torch.no_grad():
        return _row_accuracies(stack.logits(x), y, w)


def _row_accuracies(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> list[float | None]:
    hits = (logits.detach().argmax(-1) == y).double()
    n = (w > 0).sum(1)
    return [float((hits[k] * (w[k] > 0)).sum() / n[k]) if n[k] else None for k in range(len(n))]


def _stop_reached(lanes: list[_Lane], active: torch.Tensor, accs: list[float | None]) -> None:
    for k, (lane, acc) in enumerate(zip(lanes, accs)):
        if active[k] and acc is not None and acc <= lane.data.stop_acc:
            lane.stop, active[k] = "target", False
