"""One grid cell end to end, split into the stages the harness schedules.

train(original) -> unlearn(method) -> evaluate(eval_shots, backend), plus the attack, trained once
per (original model, eval_shots, backend). Stages exchange plain state dicts so that any executor
(a loop, Ray actors) can move them as safetensors bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import attacks, lira, metrics
from .data import load_split
from .forget_set import forget_split, parse_forget
from .hparams import merged, resolve_params
from .inference import logits_on
from .models import build_model, model_inputs, role_inputs
from .registry import validate_backend
from .training import accuracy, as_labels, fit
from .unlearning import METHODS, UnlearnData, describe_stop, relearn_steps, unlearn

Shots = int | None


@dataclass(frozen=True)
class CellConfig:
    """The axes of one grid cell (docs/grid.md); shots of None mean exact."""

    model: str
    forget: str
    method: str
    train_shots: Shots
    unlearn_shots: Shots
    eval_shots: Shots
    seed: int
    backend: str = "torch"
    dataset: str = "mnist"
    n_train: int = 1000
    n_test: int = 500
    params: tuple = ()
    n_eval: int | None = None  # evaluate at most this many retain, forget and test samples (hardware)

    def with_params(self, params: dict[str, dict[str, Any]] | None) -> "CellConfig":
        frozen = tuple(sorted((s, tuple(sorted(v.items()))) for s, v in (params or {}).items()))
        return replace(self, params=frozen)

    def params_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(items) for s, items in self.params}

    def validate(self) -> None:
        """Raise ValueError naming the first bad axis value."""
        resolve_params(self.model, self.method, self.params_dict())
        parse_forget(self.forget, n_train=self.n_train)
        validate_backend(self.backend)
        for axis in ("train_shots", "unlearn_shots", "eval_shots"):
            v = getattr(self, axis)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{axis}: expected 'exact' or a positive integer, got {v!r}")
        if self.n_eval is not None and (isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int)
                                        or self.n_eval < 10):
            raise ValueError(f"n_eval: expected an integer of at least 10, got {self.n_eval!r}")
        if self.backend != "torch" and self.eval_shots is None:
            raise ValueError(f"eval_shots: backend {self.backend!r} measures shots; 'exact' needs backend torch")


@dataclass(frozen=True)
class StageResult:
    state: dict[str, torch.Tensor]
    cost: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


def derive_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed for one random stream of a cell, fixed by the cell's seed and a label."""
    h = hashlib.sha256(json.dumps([seed, *labels], default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def stage_specs(cfg: CellConfig) -> dict[str, dict[str, Any]]:
    """The JSON-able inputs that determine each stage's output; equal specs share the stage."""
    recipe, method_params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    train = {
        "dataset": cfg.dataset, "n_train": cfg.n_train, "n_test": cfg.n_test, "model": cfg.model,
        "seed": cfg.seed, "train_shots": cfg.train_shots, "recipe": recipe,
    }
    if cfg.method == "none":
        unlearn_spec: dict[str, Any] = {"train": train, "method": "none"}
    elif cfg.method == "retrain":
        unlearn_spec = {"train": train, "method": "retrain", "forget": cfg.forget}
    else:
        unlearn_spec = {"train": train, "method": cfg.method, "forget": cfg.forget,
                        "unlearn_shots": cfg.unlearn_shots, "params": method_params}
    if cfg.method != "none":
        unlearn_spec["relearn"] = merged("relearn", cfg.params_dict().get("relearn"))
    attack = {"train": train, "eval_shots": cfg.eval_shots, "backend": cfg.backend,
              "params": merged("attack", cfg.params_dict().get("attack")),
              "lira": merged("lira", cfg.params_dict().get("lira"))}
    evaluate = {"unlearn": unlearn_spec, "attack": attack, "forget": cfg.forget,
                "eval_shots": cfg.eval_shots, "backend": cfg.backend}
    if cfg.n_eval is not None:  # only when set, so existing stage keys stay valid
        evaluate["n_eval"] = cfg.n_eval
    return {"train": train, "unlearn": unlearn_spec, "attack": attack, "evaluate": evaluate}


@dataclass(frozen=True)
class CellData:
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor
    retain: np.ndarray
    forget: np.ndarray
    forget_class: int | None
    image_side: int


def cell_data(cfg: CellConfig) -> CellData:
    split = load_split(cfg.dataset, cfg.n_train, cfg.n_test, cfg.seed)
    spec = parse_forget(cfg.forget, n_train=cfg.n_train)
    retain, forget = forget_split(spec, split.y_train, cfg.seed)
    x_train, x_test = model_inputs(cfg.model, split)
    return CellData(x_train, x_test, as_labels(split.y_train), as_labels(split.y_test), retain, forget,
                    spec.forget_class, int(split.images_train.shape[-1]))


def _model(cfg: CellConfig, data: CellData, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    model = build_model(cfg.model, cfg.seed, data.image_side)
    if state is not None:
        model.load_state_dict(state)
    return model


def _cost(seconds: float, circuits: int, shots: int, **extra: float) -> dict[str, float]:
    return {"seconds": seconds, "circuits": float(circuits), "shots": float(shots), **extra}


def train_stage(cfg: CellConfig) -> StageResult:
    data = cell_data(cfg)
    recipe, _ = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    model = _model(cfg, data)
    cost = fit(model, data.x_train, data.y_train, recipe, cfg.train_shots, derive_seed(cfg.seed, "train"))
    return StageResult(model.state_dict(), _cost(cost.seconds, cost.circuits, cost.shots,
                                                 circuits_device=float(cost.device_circuits)))


def unlearn_stage(cfg: CellConfig, original: dict[str, torch.Tensor]) -> StageResult:
    """The method's model; its cost (device circuits included), relearning steps and, for the
    ascent methods, the trajectory, which travels in the state under TRAJECTORY_KEY."""
    data = cell_data(cfg)
    recipe, params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    model = _model(cfg, data, original)
    udata = _unlearn_data(cfg, data, _stop_acc(params, data, model))
    shots = cfg.train_shots if cfg.method == "retrain" else cfg.unlearn_shots
    out = unlearn(cfg.method, model, udata, recipe, params, shots, derive_seed(cfg.seed, "unlearn", cfg.method),
                  fresh=lambda: _model(cfg, data))
    relearn = merged("relearn", cfg.params_dict().get("relearn"))
    steps = relearn_steps(model, out.model, udata.x_forget, udata.y_forget, recipe, relearn["fraction"],
                          relearn["max_steps"], derive_seed(cfg.seed, "relearn"))
    info = {**out.info, **({"relearn_steps": float(steps)} if steps is not None else {})}
    state = dict(out.model.state_dict())
    if out.trajectory:
        state[TRAJECTORY_KEY] = torch.tensor([[p.get(k, math.nan) for k in TRAJECTORY_FIELDS] for p in out.trajectory],
                                             dtype=torch.float64)
    return StageResult(state, _cost(out.cost.seconds, out.cost.circuits, out.cost.shots,
                                    circuits_device=float(out.cost.device_circuits), **info), out.info)


TRAJECTORY_KEY = "unlearn_log.trajectory"  # not a weight: evaluate_stage strips it before loading
TRAJECTORY_FIELDS = ("step", "forget_acc", "retain_acc", "test_acc", "loss_auc")
UNLEARN_COLUMNS = ("unlearn_steps", "unlearn_reached_target", "forget_acc_at_stop", "relearn_steps",
                   "ssd_dampened_fraction", "ssd_dampened_fraction_quantum", "ssd_dampened_fraction_classical")
_STAGE_COST = ("seconds", "circuits", "shots", "circuits_device", "qpu_seconds")


def _stop_acc(params: dict[str, Any], data: CellData, model: nn.Module) -> float:
    stop = params.get("stop_acc", "auto")
    if stop == "auto":
        stop = 0.1 if data.forget_class is not None else accuracy(model, data.x_test, data.y_test)
    return float(stop)


def _unlearn_data(cfg: CellConfig, data: CellData, stop_acc: float) -> UnlearnData:
    """Retain/forget sets, and the test samples the trajectory audit scores (held-out non-members:
    same-class test samples for class forgetting, all test samples otherwise)."""
    forget_labels = torch.unique(data.y_train[data.forget])
    same = torch.isin(data.y_test, forget_labels) if data.forget_class is not None else torch.ones_like(data.y_test, dtype=torch.bool)
    retained = data.y_test != data.forget_class if data.forget_class is not None else torch.ones_like(same)
    return UnlearnData(data.x_train[data.retain], data.y_train[data.retain], data.x_train[data.forget],
                       data.y_train[data.forget], stop_acc, data.x_test, data.y_test, same, retained)


def split_unlearned(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(model weights, trajectory rows or None) of an unlearn-stage state."""
    weights = {k: v for k, v in state.items() if k != TRAJECTORY_KEY}
    return weights, state.get(TRAJECTORY_KEY)


def unlearn_columns(cfg: CellConfig, costs: dict[str, dict[str, float]], trajectory: torch.Tensor | None) -> dict[str, Any]:
    """Row columns of the unlearn stage: device costs, every numeric info key it recorded (NaN when a
    method has none), the stop rule and the trajectory as JSON text."""
    un, train = costs.get("unlearn", {}), costs.get("train", {})
    row: dict[str, Any] = {k: math.nan for k in UNLEARN_COLUMNS}
    row.update({k: float(v) for k, v in un.items() if k not in _STAGE_COST})
    if "relearn_steps" not in un:
        row["relearn_steps"] = None  # did not recover within the bound
    row["unlearn_circuits_device"] = un.get("circuits_device", math.nan)
    row["train_circuits_device"] = train.get("circuits_device", math.nan)
    _, params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    target = params.get("stop_acc")
    if target == "auto":
        target = 0.1 if parse_forget(cfg.forget, n_train=cfg.n_train).forget_class is not None else "test_acc(original)"
    row["unlearn_stop_rule"] = describe_stop(params, target) if METHODS[cfg.method].stops else None
    row["unlearn_trajectory"] = None if trajectory is None else json.dumps(
        [{k: (None if math.isnan(v) else (int(v) if k == "step" else v)) for k, v in zip(TRAJECTORY_FIELDS, r.tolist())}
         for r in trajectory])
    return row


def attack_stage(cfg: CellConfig, original: dict[str, torch.Tensor]) -> StageResult:
    """Train the paper's MLP attack on the original model queried at the cell's eval shots."""
    start = time.perf_counter()
    data = cell_data(cfg)
    params = merged("attack", cfg.params_dict().get("attack"))
    model = _model(cfg, data, original)
    rng = np.random.default_rng(derive_seed(cfg.seed, "attack-members"))
    members = np.sort(rng.choice(cfg.n_train, size=min(params["n_members"], cfg.n_train), replace=False))
    nonmembers = np.arange(min(params["n_nonmembers"], cfg.n_test))
    q = derive_seed(cfg.seed, "attack-query", cfg.eval_shots)
    lm, cm = logits_on(model, data.x_train[members], cfg.eval_shots, cfg.backend, q)
    ln, cn = logits_on(model, data.x_test[nonmembers], cfg.eval_shots, cfg.backend, q + 1)
    f_m = attacks.attack_features(lm, data.y_train[members])
    f_n = attacks.attack_features(ln, data.y_test[nonmembers])
    mlp, train_acc = attacks.fit_paper_attack(f_m, f_n, params, derive_seed(cfg.seed, "attack-fit"))
    state = dict(mlp.state_dict())
    shadows = merged("lira", cfg.params_dict().get("lira"))["shadows"]
    if shadows > 0:
        state.update(_lira_shadows(cfg, data, shadows))
    cost = _cost(time.perf_counter() - start, cm["circuits"] + cn["circuits"], cm["shots"] + cn["shots"],
                 attack_train_acc=train_acc, qpu_seconds=cm.get("qpu_seconds", 0.0) + cn.get("qpu_seconds", 0.0))
    return StageResult(state, cost, {"attack_train_acc": train_acc})


def _lira_shadows(cfg: CellConfig, data: CellData, k: int) -> dict[str, torch.Tensor]:
    """Train k OUT shadows on the population and fit LiRA's OUT distribution for every target."""
    split = load_split(cfg.dataset, cfg.n_train, cfg.n_test, cfg.seed)
    x_pop, y_pop = role_inputs(cfg.model, split, "attack"), as_labels(split.labels["attack"])
    size = min(cfg.n_train, len(y_pop) // 2)
    if size < 10:
        raise ValueError(f"lira: {cfg.dataset!r} leaves {len(y_pop)} population samples; shadows need at least 20")
    recipe, _ = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    phis = []
    for i in range(k):
        rng = np.random.default_rng(derive_seed(cfg.seed, "lira-subset", i))
        idx = torch.as_tensor(rng.choice(len(y_pop), size=size, replace=False))
        shadow = build_model(cfg.model, derive_seed(cfg.seed, "lira-init", i) % 2**31, data.image_side)
        fit(shadow, x_pop[idx], y_pop[idx], recipe, None, derive_seed(cfg.seed, "lira-train", i))
        q = derive_seed(cfg.seed, "lira-query", i, cfg.eval_shots)
        l_tr, _ = logits_on(shadow, data.x_train, cfg.eval_shots, "torch", q)
        l_te, _ = logits_on(shadow, data.x_test, cfg.eval_shots, "torch", q + 1)
        phis.append(np.r_[lira.logit_confidence(l_tr, data.y_train), lira.logit_confidence(l_te, data.y_test)])
    mu, sigma = lira.out_distribution(np.stack(phis))
    return {"lira.mu": torch.from_numpy(mu), "lira.sigma": torch.tensor([sigma], dtype=torch.float64)}


def evaluate_stage(
    cfg: CellConfig,
    original: dict[str, torch.Tensor],
    unlearned: dict[str, torch.Tensor],
    attack: dict[str, torch.Tensor],
    costs: dict[str, dict[str, float]],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics row (docs/metrics.md) and per-example rows of the unlearned model."""
    start = time.perf_counter()
    data = cell_data(cfg)
    params = merged("attack", cfg.params_dict().get("attack"))
    unlearned, trajectory = split_unlearned(unlearned)
    model = _model(cfg, data, unlearned)
    mlp = attacks.load_paper_attack(attack, params)
    q = derive_seed(cfg.seed, "eval", cfg.eval_shots)
    tr_idx, te_idx = _eval_indices(cfg, data)
    yt_tr, yt_te = data.y_train[tr_idx], data.y_test[te_idx]
    l_tr, c_tr = logits_on(model, data.x_train[tr_idx], cfg.eval_shots, cfg.backend, q)
    l_te, c_te = logits_on(model, data.x_test[te_idx], cfg.eval_shots, cfg.backend, q + 1)
    s_tr = mlp.scores(attacks.attack_features(l_tr, yt_tr))
    s_te = mlp.scores(attacks.attack_features(l_te, yt_te))
    loss_tr = attacks.per_sample_loss(l_tr, yt_tr).numpy()
    loss_te = attacks.per_sample_loss(l_te, yt_te).numpy()
    pred_tr, pred_te = l_tr.argmax(1).numpy(), l_te.argmax(1).numpy()
    y_tr, y_te = yt_tr.numpy(), yt_te.numpy()

    in_forget = np.isin(tr_idx, data.forget)
    f, r = np.flatnonzero(in_forget), np.flatnonzero(~in_forget)
    forget_labels = np.unique(y_tr[f])
    same_class = np.isin(y_te, forget_labels)
    flags_f = s_tr[f] >= params["threshold"]
    rate, lo, hi = metrics.mia_success(flags_f)
    test_forget = y_te == data.forget_class if data.forget_class is not None else np.zeros_like(y_te, bool)
    eval_seconds = time.perf_counter() - start
    stage = lambda name: costs.get(name, {})  # noqa: E731
    circuits = {s: stage(s).get("circuits", 0.0) for s in ("train", "unlearn", "attack")}
    shots = {s: stage(s).get("shots", 0.0) for s in ("train", "unlearn", "attack")}
    row: dict[str, Any] = {
        "mia_success": rate, "mia_success_lo": lo, "mia_success_hi": hi,
        "mia_auc": metrics.auc(s_tr[f], s_te[same_class]),
        "mia_tpr_at_1pct_fpr": metrics.tpr_at_fpr(s_tr[f], s_te[same_class], 0.01),
        "mia_tpr_at_01pct_fpr": metrics.tpr_at_fpr(s_tr[f], s_te[same_class], 0.001),
        "mia_nonmember_flag_rate": float(np.mean(s_te[same_class] >= params["threshold"])) if same_class.any() else math.nan,
        "attack_train_acc": stage("attack").get("attack_train_acc", math.nan),
        "loss_auc": metrics.auc(-loss_tr[f], -loss_te[same_class]),
        "loss_tpr_at_1pct_fpr": metrics.tpr_at_fpr(-loss_tr[f], -loss_te[same_class], 0.01),
        "acc_train_retain": _acc(pred_tr, y_tr, r),
        "acc_train_forget": _acc(pred_tr, y_tr, f),
        "acc_test_retain": _acc(pred_te, y_te, np.flatnonzero(~test_forget)),
        "acc_test_forget": _acc(pred_te, y_te, np.flatnonzero(test_forget)),
        "n_forget": len(data.forget),
        "n_forget_evaluated": len(f),
        "train_seconds": stage("train").get("seconds", 0.0),
        "unlearn_seconds": stage("unlearn").get("seconds", 0.0),
        "attack_seconds": stage("attack").get("seconds", 0.0),
        "eval_seconds": eval_seconds,
        "unlearn_circuits": circuits["unlearn"],
        "unlearn_shots_total": shots["unlearn"],
        "eval_circuits": c_tr["circuits"] + c_te["circuits"],
        "circuit_executions": sum(circuits.values()) + c_tr["circuits"] + c_te["circuits"],
        "shots_total": sum(shots.values()) + c_tr["shots"] + c_te["shots"],
        "qpu_seconds": stage("attack").get("qpu_seconds", 0.0) + c_tr.get("qpu_seconds", 0.0) + c_te.get("qpu_seconds", 0.0),
        **unlearn_columns(cfg, costs, trajectory),
    }
    if "lira.mu" in attack:
        mu, sigma = attack["lira.mu"].numpy(), float(attack["lira.sigma"][0])
        mu = np.r_[mu[: cfg.n_train][tr_idx], mu[cfg.n_train :][te_idx]]
        phi = np.r_[lira.logit_confidence(l_tr, yt_tr), lira.logit_confidence(l_te, yt_te)]
        sc = lira.lira_scores(phi, mu, sigma)
        sc_tr, sc_te = sc[: len(y_tr)], sc[len(y_tr) :]
        row["lira_auc"] = metrics.auc(sc_tr[f], sc_te[same_class])
        row["lira_tpr_at_1pct_fpr"] = metrics.tpr_at_fpr(sc_tr[f], sc_te[same_class], 0.01)
        row["lira_tpr_at_01pct_fpr"] = metrics.tpr_at_fpr(sc_tr[f], sc_te[same_class], 0.001)
    row.update(_provenance(c_tr, c_te))
    examples = pd.DataFrame({
        "split": np.r_[np.where(in_forget, "train_forget", "train_retain"), np.full(len(y_te), "test")],
        "sample_index": np.r_[tr_idx, te_idx].astype(np.int64),
        "label": np.r_[y_tr, y_te].astype(np.int64),
        "prediction": np.r_[pred_tr, pred_te].astype(np.int64),
        "loss": np.r_[loss_tr, loss_te],
        "attack_score": np.r_[s_tr, s_te],
    })
    return row, examples


def _eval_indices(cfg: CellConfig, data: CellData) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices to evaluate: all, or a seeded subsample of n_eval per split."""
    if cfg.n_eval is None:
        return np.arange(cfg.n_train), np.arange(cfg.n_test)
    rng = np.random.default_rng(derive_seed(cfg.seed, "eval-subsample", cfg.forget))
    pick = lambda idx: np.sort(rng.choice(idx, size=min(cfg.n_eval, len(idx)), replace=False))  # noqa: E731
    return np.sort(np.r_[pick(data.retain), pick(data.forget)]), pick(np.arange(cfg.n_test))


_PROVENANCE = ("transpiled_depth", "two_qubit_gates", "calibration_time", "backend_version", "backend_name",
               "qiskit_ibm_runtime_version", "optimization_level")


def _provenance(*costs: dict[str, Any]) -> dict[str, Any]:
    """Backend provenance of the evaluation queries (hardware): the job ids of all, the rest of the last."""
    out: dict[str, Any] = {}
    for c in costs:
        out.update({k: c[k] for k in _PROVENANCE if k in c})
    jobs = [j for c in costs for j in c.get("job_ids", [])]
    if jobs:
        out["job_ids"] = jobs
    est = [c["qpu_seconds_est"] for c in costs if "qpu_seconds_est" in c]
    if est:
        out["qpu_seconds_est"] = float(sum(est))
    return out


def _acc(pred: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    return float((pred[idx] == y[idx]).mean()) if len(idx) else math.nan


def run_cell(cfg: CellConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """All stages of one cell in-process (no reuse): the reference for what the harness computes."""
    train = train_stage(cfg)
    un = unlearn_stage(cfg, train.state)
    att = attack_stage(cfg, train.state)
    return evaluate_stage(cfg, train.state, un.state, att.state,
                          {"train": train.cost, "unlearn": un.cost, "attack": att.cost})
