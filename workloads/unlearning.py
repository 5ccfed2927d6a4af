"""Unlearning methods behind one interface: (original model, data, hyper-parameters, shots, seed) -> model.

`ga` and `rga` ascend until forget-set train accuracy reaches `stop_acc` (checked before every
step at the unlearning shots), never past `max_epochs`. `rga` is our reconstruction of the
study's unpublished relative gradient ascent: each step descends on a retain batch and ascends
on a forget batch, loss = CE(retain) - gamma * CE(forget).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .models import shots_mode
from .training import Cost, batches, fit, sgd


@dataclass(frozen=True)
class UnlearnData:
    x_retain: torch.Tensor
    y_retain: torch.Tensor
    x_forget: torch.Tensor
    y_forget: torch.Tensor
    stop_acc: float  # resolved target forget accuracy for the stop rule


@dataclass
class Outcome:
    model: nn.Module
    cost: Cost
    info: dict[str, Any] = field(default_factory=dict)


Method = Callable[..., Outcome]


def _none(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return Outcome(model, Cost(0.0, 0, 0))


def _retrain(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    new = fresh()
    cost = fit(new, data.x_retain, data.y_retain, recipe, shots, seed)
    return Outcome(new, cost)


def _finetune(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    cost = fit(model, data.x_retain, data.y_retain, {**params, "nesterov": False}, shots, seed + 1)
    return Outcome(model, cost)


def _ascent(model, data, params, shots, seed, relative: bool) -> Outcome:
    """Shared loop of GA and RGA with the explicit stop rule."""
    gen = torch.Generator().manual_seed(seed + 2)
    shot_gen = torch.Generator().manual_seed(seed + 3)
    opt = sgd(model, {**params, "nesterov": False})
    steps, stop, start = 0, "max_epochs", time.perf_counter()
    with shots_mode(model, shots, shot_gen) as log:
        for _ in range(params["max_epochs"]):
            for idx in batches(len(data.y_forget), params["batch_size"], gen):
                if _forget_acc(model, data) <= data.stop_acc:
                    stop = "target"
                    break
                model.train()
                opt.zero_grad()
                loss = -params.get("gamma", 1.0) * F.cross_entropy(model(data.x_forget[idx]), data.y_forget[idx])
                if relative:
                    r = torch.randint(len(data.y_retain), (params["batch_size"],), generator=gen)
                    loss = loss + F.cross_entropy(model(data.x_retain[r]), data.y_retain[r])
                loss.backward()
                opt.step()
                steps += 1
            else:
                continue
            break
        final = _forget_acc(model, data)
    cost = Cost(time.perf_counter() - start, log.circuits, log.shots)
    return Outcome(model, cost, {"unlearn_steps": steps, "unlearn_reached_target": float(stop == "target"),
                                     "forget_acc_at_stop": final})


def _forget_acc(model: nn.Module, data: UnlearnData) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(data.x_forget).argmax(1) == data.y_forget).double().mean())


def _ga(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    out = _ascent(model, data, params, shots, seed, relative=False)
    if params["repair_epochs"] > 0:
        repair = {**params, "epochs": params["repair_epochs"], "lr": 0.01, "nesterov": False}
        extra = fit(model, data.x_retain, data.y_retain, repair, shots, seed + 4)
        out.cost = Cost(out.cost.seconds + extra.seconds, out.cost.circuits + extra.circuits, out.cost.shots + extra.shots)
    return out


def _rga(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    return _ascent(model, data, params, shots, seed, relative=True)


def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Mean squared minibatch gradients, one tensor per parameter (shots set by the caller)."""
    gen = torch.Generator().manual_seed(seed)
    acc = [torch.zeros_like(p) for p in model.parameters()]
    parts = batches(len(y), batch_size, gen)
    model.eval()
    for idx in parts:
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        for a, p in zip(acc, model.parameters()):
            if p.grad is not None:  # frozen parameters get no importance
                a += p.grad.detach() ** 2
    model.zero_grad()
    return [a / len(parts) for a in acc]


def _ssd(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    """Selective synaptic dampening (Foster et al. 2023), no retraining."""
    start = time.perf_counter()
    shot_gen = torch.Generator().manual_seed(seed + 5)
    x_all = torch.cat([data.x_retain, data.x_forget])
    y_all = torch.cat([data.y_retain, data.y_forget])
    # Frozen angles cost no parameter-shift circuits when they are not to be dampened.
    model.quantum.weight.requires_grad_(params["dampen_quantum"])
    with shots_mode(model, shots, shot_gen) as log:
        i_d = fisher_diagonal(model, x_all, y_all, params["batch_size"], seed + 6)
        i_f = fisher_diagonal(model, data.x_forget, data.y_forget, params["batch_size"], seed + 7)
    model.quantum.weight.requires_grad_(True)
    dampened, total = 0, 0
    with torch.no_grad():
        for (name, p), d, f in zip(model.named_parameters(), i_d, i_f):
            total += p.numel()
            if name.startswith("quantum.") and not params["dampen_quantum"]:
                continue
            mask = f > params["alpha"] * d
            beta = torch.clamp(params["lam"] * d / f.clamp_min(1e-30), max=1.0)
            p[mask] *= beta[mask]
            dampened += int(mask.sum())
    cost = Cost(time.perf_counter() - start, log.circuits, log.shots)
    return Outcome(model, cost, {"ssd_dampened_fraction": dampened / total})


METHODS: dict[str, Method] = {
    "none": _none,
    "retrain": _retrain,
    "finetune": _finetune,
    "ga": _ga,
    "ssd": _ssd,
    "rga": _rga,
}


def unlearn(
    method: str,
    original: nn.Module,
    data: UnlearnData,
    recipe: dict[str, Any],
    params: dict[str, Any],
    shots: int | None,
    seed: int,
    fresh: Callable[[], nn.Module],
) -> Outcome:
    """Apply `method` to a copy of `original`; `fresh` builds an untrained model for `retrain`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](copy.deepcopy(original), data, recipe, params, shots, seed, fresh)
