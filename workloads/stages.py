"""One grid cell end to end, split into the stages the harness schedules.

train(original) -> unlearn(method) -> evaluate(eval_shots, backend), plus the attack stage (trained once per
original model, forget set, eval_shots and backend) and, when RMIA and LiRA are on, K reference models trained
on halves of P_attack (shared by every cell of a dataset, model, seed and train_shots). Stages exchange plain
state dicts so that any executor (a loop, Ray actors) can move them as safetensors bytes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from . import attacks, metrics
from .attacks import Knowledge, Outputs
from .attacks.base import logit_confidence
from .data import ROLES, load_split
from .data.forget_set import forget_split, parse_forget
from .hparams import attack_params, merged, resolve_params
from .quantum.inference import logits_on
from .models import build_model, compiled_only, model_spec, register_circuit, role_inputs
from .quantum.backends import kind as backend_kind
from .quantum.backends import validate_backend
from .seeds import derive_seed
from .models.batched import train_many
from .models.circuit import identity as circuit_identity
from .models.circuit import provenance as circuit_provenance
from .models.training import accuracy, as_labels, fit
from .unlearning import METHODS, UnlearnData, describe_stop, relearn_steps, stops, unlearn, unlearn_many

__all__ = ["CellConfig", "ReferenceConfig", "ReplicaConfig", "ShadowConfig", "StageResult", "derive_seed", "stage_specs",
           "train_stage", "train_group_stage", "reference_stage", "reference_group_stage", "shadow_stage", "replica_stage",
           "replica_group_stage", "unlearn_stage", "ulira_stage",
           "attack_stage", "evaluate_stage", "run_cell", "catalog"]

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
    attack_scope: str | None = None  # set on an attack stage's config: "shared" or "forget" (None: every attack)
    circuit: str | None = None  # a circuit model's ref (workloads/models/circuit.py); None for the built-ins
    # Set on a train stage's config (None on the cell's other stages): the stage trains together with the other
    # seeds of its spec (`group_id`), and how many the plan holds prices it (harness/estimate.py).
    group_size: int | None = None

    def group_id(self) -> str | None:
        """Train stages with equal ids differ only in their seed: `train_group_stage` trains them together."""
        return None if self.group_size is None else _group_id(_train_spec(self), "seed")

    def with_params(self, params: dict[str, dict[str, Any]] | None) -> "CellConfig":
        frozen = tuple(sorted((s, tuple(sorted(v.items()))) for s, v in (params or {}).items()))
        return replace(self, params=frozen)

    def params_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(items) for s, items in self.params}

    def validate(self) -> None:
        """Raise ValueError naming the first bad axis value."""
        resolve_params(self.model, self.method, self.params_dict())
        attack_params(self.params_dict())
        parse_forget(self.forget, n_train=self.n_train)
        validate_backend(self.backend)
        for axis in ("train_shots", "unlearn_shots", "eval_shots"):
            v = getattr(self, axis)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{axis}: expected 'exact' or a positive integer, got {v!r}")
        if self.n_eval is not None and (isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int)
                                        or self.n_eval < 10):
            raise ValueError(f"n_eval: expected an integer of at least 10, got {self.n_eval!r}")
        if compiled_only(self.model) and model_spec(self.model).family == "hqnn":
            for axis in ("train_shots", "unlearn_shots"):
                if getattr(self, axis) is not None:
                    raise ValueError(f"{axis}: model {self.model!r} runs its circuit on the compiled executor, which "
                                     "has no finite-shot gradient through a hybrid front end; use 'exact'")
        if self.eval_shots is None and not backend_kind(self.backend).EXACT:
            raise ValueError(f"eval_shots: backend {self.backend!r} measures shots; 'exact' needs backend torch")

    def stage_config(self, name: str) -> Any:
        """The config a stage of this cell runs with: a `ReferenceConfig` for `reference.I`, a `ShadowConfig`
        for `shadow`, a `ReplicaConfig` for `replica.I`, the cell's with its attack scope for `attack`
        (shared) and `attack.forget`, else the cell's."""
        kind, _, suffix = name.partition(".")
        if kind == "train":
            return replace(self, group_size=1)
        if kind == "reference":
            return self._carry_circuit(reference_config(self, int(suffix)))
        if kind == "shadow":
            return self._carry_circuit(shadow_config(self))
        if kind == "replica":
            return self._carry_circuit(replica_config(self, int(suffix)))
        if kind == "attack":
            return replace(self, attack_scope=suffix or "shared")
        return self

    def _carry_circuit(self, stage_cfg: Any) -> Any:
        """A stage's own config with the cell's circuit-model ref, so that a worker can build the model."""
        return stage_cfg if self.circuit is None else replace(stage_cfg, circuit=self.circuit)


@dataclass(frozen=True)
class ReferenceConfig:
    """One reference model: the cell's model and recipe trained on one half of its pool. Offline, the pool is
    P_attack (never the target's train or test data, never P_eval); online, it is the target's train set and
    P_eval, the samples LiRA and RMIA score (docs/data.md). Pair j's two halves are complementary.

    `group_size` (the cell's K) only prices the stage (harness/estimate.py): it is not in the spec, so a
    reference is one stored model whichever K asked for it, trained alone or in a group."""

    dataset: str
    n_train: int
    n_test: int
    model: str
    seed: int
    train_shots: Shots
    recipe: tuple
    index: int
    mode: str = "offline"
    group_size: int = 1
    circuit: str | None = None  # the cell's circuit-model ref (CellConfig.circuit)

    def spec(self) -> dict[str, Any]:
        spec = {"dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test, "model": self.model,
                "seed": self.seed, "train_shots": self.train_shots, "recipe": dict(self.recipe),
                "index": self.index}
        if self.mode != "offline":  # only when set, so that stored offline references keep their keys
            spec["mode"] = self.mode
        return spec

    def group_id(self) -> str:
        """References with equal ids differ only in their index: `reference_group_stage` trains them together."""
        return _group_id(self.spec())


def _group_id(spec: dict[str, Any], varying: str = "index") -> str:
    return json.dumps({k: v for k, v in spec.items() if k != varying}, sort_keys=True)


def _one_group(cfgs: list[Any], kind: str, varying: str = "index") -> None:
    ids = {c.group_id() for c in cfgs}
    if len(ids) != 1 or None in ids:
        raise ValueError(f"{kind}_group_stage: the {kind}s differ in more than their {varying}")


def reference_config(cfg: CellConfig, index: int) -> ReferenceConfig:
    recipe, _ = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    refs = attack_params(cfg.params_dict())["references"]
    recipe = {**recipe, "epochs": max(1, round(recipe["epochs"] * refs["epoch_fraction"]))}
    return ReferenceConfig(cfg.dataset, cfg.n_train, cfg.n_test, cfg.model, cfg.seed, cfg.train_shots,
                           tuple(sorted(recipe.items())), index, refs["mode"], refs["k"])


@dataclass(frozen=True)
class ShadowConfig:
    """U-LiRA's K shadow models of a cell's model and recipe, trained on halves of the shadow pool (P_attack
    plus the cell's forget set): one stage for every method, eval shot count and backend."""

    dataset: str
    n_train: int
    n_test: int
    model: str
    seed: int
    train_shots: Shots
    recipe: tuple
    forget: str
    k: int
    circuit: str | None = None  # the cell's circuit-model ref (CellConfig.circuit)

    def spec(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test, "model": self.model,
                "seed": self.seed, "train_shots": self.train_shots, "recipe": dict(self.recipe),
                "forget": self.forget, "k": self.k}


def shadow_config(cfg: CellConfig) -> ShadowConfig:
    recipe, _ = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    k = attack_params(cfg.params_dict())["ulira"]["k"]
    return ShadowConfig(cfg.dataset, cfg.n_train, cfg.n_test, cfg.model, cfg.seed, cfg.train_shots,
                        tuple(sorted(recipe.items())), cfg.forget, k)


@dataclass(frozen=True)
class ReplicaConfig:
    """A retrain of the cell's retain set with its own initialisation and data order (index I): U-LiRA's
    retrained model, and the retrain-to-retrain noise floor. Like a reference's, `group_size` (the cell's
    replicas) only prices the stage."""

    dataset: str
    n_train: int
    n_test: int
    model: str
    seed: int
    train_shots: Shots
    recipe: tuple
    forget: str
    index: int
    group_size: int = 1
    circuit: str | None = None  # the cell's circuit-model ref (CellConfig.circuit)

    def spec(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test, "model": self.model,
                "seed": self.seed, "train_shots": self.train_shots, "recipe": dict(self.recipe),
                "forget": self.forget, "index": self.index}

    def group_id(self) -> str:
        """Replicas with equal ids differ only in their index: `replica_group_stage` trains them together."""
        return _group_id(self.spec())


def replica_config(cfg: CellConfig, index: int) -> ReplicaConfig:
    recipe, method_params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    floor = method_params["replicas"] - 1 if cfg.method == "retrain" else 0  # as `stage_specs` plans them
    ulira = 1 if attack_params(cfg.params_dict())["ulira"]["k"] else 0
    return ReplicaConfig(cfg.dataset, cfg.n_train, cfg.n_test, cfg.model, cfg.seed, cfg.train_shots,
                         tuple(sorted(recipe.items())), cfg.forget, index, max(floor, ulira, 1))


@dataclass(frozen=True)
class StageResult:
    state: dict[str, torch.Tensor]
    cost: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


def stage_specs(cfg: CellConfig) -> dict[str, dict[str, Any]]:
    """The JSON-able inputs that determine each stage's output; equal specs share the stage.

    Stage names are kinds, or `reference.I` for the I-th reference model (kind `reference`)."""
    _, method_params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    train = _train_spec(cfg)
    if cfg.method == "none":
        unlearn_spec: dict[str, Any] = {"train": train, "method": "none"}
    elif cfg.method == "retrain":
        unlearn_spec = {"train": train, "method": "retrain", "forget": cfg.forget}
    else:
        unlearn_spec = {"train": train, "method": cfg.method, "forget": cfg.forget,
                        "unlearn_shots": cfg.unlearn_shots, "params": method_params}
    if cfg.method != "none":
        unlearn_spec["relearn"] = merged("relearn", cfg.params_dict().get("relearn"))
    ap = attack_params(cfg.params_dict())
    refs = {f"reference.{i}": reference_config(cfg, i).spec() for i in range(ap["references"]["k"])}
    # Two attack stages: `attack` fits the attacks that ignore the forget set, once for every forget set of
    # the same original model and eval shots; `attack.forget` fits those that draw from the retain set, when
    # they are fit on the original model (by default they are fit on the evaluated model, in `evaluate`).
    shared = {"train": train, "eval_shots": cfg.eval_shots, "backend": cfg.backend, "params": ap, "scope": "shared"}
    stages = {"attack": shared}
    if attacks.active(ap, "forget"):
        stages["attack.forget"] = {**shared, "forget": cfg.forget, "scope": "forget"}
    if ap["ulira"]["k"]:  # U-LiRA: shadows shared by the methods, unlearned per method; a retrained replica
        shadow = shadow_config(cfg).spec()
        stages["shadow"] = shadow
        stages["ulira"] = {"shadow": shadow, "method": cfg.method, "unlearn_shots": cfg.unlearn_shots,
                           "params": method_params if cfg.method not in ("none", "retrain") else {}}
        stages["replica.0"] = replica_config(cfg, 0).spec()
    for i in range(method_params["replicas"] - 1 if cfg.method == "retrain" else 0):  # the noise floor
        stages[f"replica.{i}"] = replica_config(cfg, i).spec()
    evaluate = {"unlearn": unlearn_spec, **{n: v for n, v in stages.items() if n != "shadow"},
                "forget": cfg.forget, "eval_shots": cfg.eval_shots, "backend": cfg.backend}
    if cfg.n_eval is not None:  # only when set, so existing stage keys stay valid
        evaluate["n_eval"] = cfg.n_eval
    if cfg.circuit is not None:  # every stage that trains the model (and those that nest them) names its circuit
        for spec in (*refs.values(), *(v for n, v in stages.items() if n == "shadow" or n.startswith("replica."))):
            spec["circuit"] = circuit_identity(cfg.circuit)
    return {"train": train, **refs, "unlearn": unlearn_spec, **stages, "evaluate": evaluate}


def _train_spec(cfg: CellConfig) -> dict[str, Any]:
    """What determines the cell's original model (its `train` stage)."""
    recipe, _ = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    spec = {"dataset": cfg.dataset, "n_train": cfg.n_train, "n_test": cfg.n_test, "model": cfg.model,
            "seed": cfg.seed, "train_shots": cfg.train_shots, "recipe": recipe}
    if cfg.circuit is not None:
        spec["circuit"] = circuit_identity(cfg.circuit)
    return spec


@dataclass(frozen=True)
class CellData:
    """Inputs and labels of every data role in the model's form, and the retain/forget split of train."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    retain: np.ndarray
    forget: np.ndarray
    forget_class: int | None
    image_side: int
    dataset_index: dict[str, np.ndarray]  # raw dataset row of every role position

    @property
    def x_train(self) -> torch.Tensor:
        return self.x["train"]

    @property
    def x_test(self) -> torch.Tensor:
        return self.x["test"]

    @property
    def y_train(self) -> torch.Tensor:
        return self.y["train"]

    @property
    def y_test(self) -> torch.Tensor:
        return self.y["test"]

    def sizes(self) -> dict[str, int]:
        return {r: len(v) for r, v in self.y.items()}


def _register(cfg: Any) -> None:
    """Put a stage config's circuit model into this process's registry: on a worker, stages meet it here first."""
    if cfg.circuit is not None:
        register_circuit(cfg.model, cfg.circuit)


def cell_data(cfg: CellConfig) -> CellData:
    _register(cfg)
    split = load_split(cfg.dataset, cfg.n_train, cfg.n_test, cfg.seed)
    spec = parse_forget(cfg.forget, n_train=cfg.n_train)
    retain, forget = forget_split(spec, split.y_train, cfg.seed)
    return CellData({r: role_inputs(cfg.model, split, r) for r in ROLES},
                    {r: as_labels(split.labels[r]) for r in ROLES}, retain, forget, spec.forget_class,
                    int(split.images_train.shape[-1]), split.index)


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


def train_group_stage(cfgs: list[CellConfig]) -> list[StageResult]:
    """Train the seeds of one train spec (equal `group_id`) together with `train_many`; each result equals
    `train_stage` of its config to 1e-10 in every weight (tests/test_grouped_seeds.py), so the harness stores
    each under its own key and reuses it whichever way it was trained."""
    _one_group(cfgs, "train", "seed")
    data = [cell_data(cfg) for cfg in cfgs]
    recipe, _ = resolve_params(cfgs[0].model, cfgs[0].method, cfgs[0].params_dict())
    models = [_model(cfg, d) for cfg, d in zip(cfgs, data)]
    costs = train_many(models, [(d.x_train, d.y_train) for d in data], recipe,
                       [derive_seed(cfg.seed, "train") for cfg in cfgs], cfgs[0].train_shots)
    return [StageResult(m.state_dict(), _cost(c.seconds, c.circuits, c.shots, circuits_device=float(c.device_circuits)))
            for m, c in zip(models, costs)]


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
    learned = _learned_beyond_unseen(model, udata)
    info = {**out.info, "relearn_applicable": float(learned),
            **({"relearn_steps": float(steps)} if steps is not None and learned else {})}
    state = dict(out.model.state_dict())
    if out.trajectory:
        state[TRAJECTORY_KEY] = torch.tensor([[p.get(k, math.nan) for k in TRAJECTORY_FIELDS] for p in out.trajectory],
                                             dtype=torch.float64)
    return StageResult(state, _cost(out.cost.seconds, out.cost.circuits, out.cost.shots,
                                    circuits_device=float(out.cost.device_circuits), **info), out.info)


def _learned_beyond_unseen(original: nn.Module, udata: UnlearnData) -> bool:
    """Whether the original model is measurably more accurate on the forget set than on the unseen samples
    the evaluate stage scores (Newcombe's interval of the difference above 0). If not, relearning it measures
    generalisation, not memory: on random forget sets every method "relearned" in 0 steps."""
    if udata.x_heldout is None or not len(udata.y_heldout) or not len(udata.y_forget):
        return False
    right = lambda x, y: (logits_on(original, x, None, "torch", 0)[0].argmax(1) == y).numpy()  # noqa: E731
    _, lo, _ = metrics.rate_difference(right(udata.x_forget, udata.y_forget), right(udata.x_heldout, udata.y_heldout))
    return bool(lo > 0)


TRAJECTORY_KEY = "unlearn_log.trajectory"  # not a weight: evaluate_stage strips it before loading
TRAJECTORY_FIELDS = ("step", "forget_acc", "retain_acc", "test_acc", "loss_auc")
UNLEARN_COLUMNS = ("unlearn_steps", "unlearn_reached_target", "forget_acc_at_stop", "relearn_steps", "relearn_applicable",
                   "ssd_dampened_fraction", "ssd_dampened_fraction_quantum", "ssd_dampened_fraction_classical")
_STAGE_COST = ("seconds", "circuits", "shots", "circuits_device", "qpu_seconds")


def _stop_acc(params: dict[str, Any], data: CellData, model: nn.Module) -> float:
    """`stop_acc: auto`: 0.1 for a class, else the original's accuracy on P_attack, the unseen data the model
    owner may read (never test or P_eval, which report the result)."""
    stop = params.get("stop_acc", "auto")
    if stop == "auto":
        stop = 0.1 if data.forget_class is not None else accuracy(model, data.x["attack"], data.y["attack"])
    return float(stop)


def _unlearn_data(cfg: CellConfig, data: CellData, stop_acc: float) -> UnlearnData:
    """Retain/forget sets, the retained-class test samples and the held-out P_eval non-members that the
    trajectory audit scores (the same ones the evaluate stage scores)."""
    retained = data.y_test != data.forget_class if data.forget_class is not None else torch.ones_like(data.y_test, dtype=torch.bool)
    heldout = torch.from_numpy(_scored_nonmembers(cfg, data))
    return UnlearnData(data.x_train[data.retain], data.y_train[data.retain], data.x_train[data.forget],
                       data.y_train[data.forget], stop_acc, data.x_test, data.y_test, retained,
                       data.x["eval"][heldout], data.y["eval"][heldout])


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
        row["relearn_steps"] = None  # did not recover within the bound, or not applicable (relearn_applicable)
    row["unlearn_circuits_device"] = un.get("circuits_device", math.nan)
    row["train_circuits_device"] = train.get("circuits_device", math.nan)
    _, params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    target = params.get("stop_acc")
    if target == "auto":
        target = 0.1 if parse_forget(cfg.forget, n_train=cfg.n_train).forget_class is not None else "P_attack_acc(original)"
    row["unlearn_stop_rule"] = describe_stop(params, target) if stops(cfg.method) else None
    row["unlearn_trajectory"] = None if trajectory is None else json.dumps(
        [{k: (None if math.isnan(v) else (int(v) if k == "step" else v)) for k, v in zip(TRAJECTORY_FIELDS, r.tolist())}
         for r in trajectory])
    return row


def reference_members(n_pool: int, seed: int, index: int, mode: str = "offline") -> np.ndarray:
    """Pool positions reference `index` trains on: pair index // 2 splits the pool in two halves, so that each
    pool sample is IN exactly half of the references (P_attack offline; online train then P_eval)."""
    order = np.random.default_rng(derive_seed(seed, f"reference-pair{'' if mode == 'offline' else '-' + mode}",
                                              index // 2)).permutation(n_pool)
    half = order[: n_pool // 2] if index % 2 == 0 else order[n_pool // 2 :]
    return np.sort(half)


# The roles an online reference's pool holds, in order: the samples LiRA and RMIA score (attacks/lira.py).
ONLINE_POOL = ("train", "eval")


@dataclass(frozen=True)
class _ReferenceData:
    x: torch.Tensor
    y: torch.Tensor
    image_side: int
    sizes: dict[str, int]  # rows of each pool role, in pool order


def _reference_data(rc: ReferenceConfig) -> _ReferenceData:
    """The reference pool: P_attack offline; online the target's train set then P_eval (docs/data.md)."""
    _register(rc)
    split = load_split(rc.dataset, rc.n_train, rc.n_test, rc.seed)
    roles = ("attack",) if rc.mode == "offline" else ONLINE_POOL
    return _ReferenceData(torch.cat([role_inputs(rc.model, split, r) for r in roles]),
                          torch.cat([as_labels(split.labels[r]) for r in roles]), int(split.images_train.shape[-1]),
                          {r: len(split.labels[r]) for r in roles})


def _reference_state(rc: ReferenceConfig, data: _ReferenceData, model: nn.Module,
                     members: np.ndarray) -> dict[str, torch.Tensor]:
    """Weights, and the positions of each pool role it trained on: `members` (P_attack) offline, as before,
    `members.train` and `members.eval` online."""
    state = dict(model.state_dict())
    if rc.mode == "offline":
        return {**state, "members": torch.from_numpy(members.astype(np.int64))}
    start = 0
    for role, n in data.sizes.items():
        held = members[(members >= start) & (members < start + n)] - start
        state[f"members.{role}"] = torch.from_numpy(held.astype(np.int64))
        start += n
    return state


def reference_member_roles(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Role -> positions a reference trained on, from its state (`members`: P_attack)."""
    return {("attack" if k == "members" else k.partition(".")[2]): v.numpy()
            for k, v in state.items() if k == "members" or k.startswith("members.")}


def _reference_model(rc: ReferenceConfig, side: int) -> nn.Module:
    return build_model(rc.model, derive_seed(rc.seed, "reference-init", rc.index) % 2**31, side)


def reference_stage(rc: ReferenceConfig) -> StageResult:
    """Train one reference model alone on its half of the pool; its state carries what it trained on."""
    data = _reference_data(rc)
    members = reference_members(len(data.y), rc.seed, rc.index, rc.mode)
    model = _reference_model(rc, data.image_side)
    cost = fit(model, data.x[members], data.y[members], dict(rc.recipe), rc.train_shots,
               derive_seed(rc.seed, "reference-train", rc.index))
    return StageResult(_reference_state(rc, data, model, members), _cost(cost.seconds, cost.circuits, cost.shots))


def reference_group_stage(rcs: list[ReferenceConfig]) -> list[StageResult]:
    """Train references of one group (equal `group_id`) together with `train_many`; each result equals
    `reference_stage` of its config to 1e-10 in every weight (tests/test_grouped_references.py), so the
    harness stores each under its own key and reuses it whichever way it was trained."""
    _one_group(rcs, "reference")
    data = _reference_data(rcs[0])
    held = [reference_members(len(data.y), rc.seed, rc.index, rc.mode) for rc in rcs]
    models = [_reference_model(rc, data.image_side) for rc in rcs]
    costs = train_many(models, [(data.x[m], data.y[m]) for m in held], dict(rcs[0].recipe),
                       [derive_seed(rc.seed, "reference-train", rc.index) for rc in rcs], rcs[0].train_shots)
    return [StageResult(_reference_state(rc, data, m, h), _cost(c.seconds, c.circuits, c.shots))
            for rc, m, h, c in zip(rcs, models, held, costs)]


def _shadow_pool(data: CellData) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(inputs, labels, n_attack): P_attack, then the cell's forget set (the last rows). For class
    forgetting P_attack's samples of the class are left out, so that a shadow that never held a forget
    sample never saw the class, as the retrained model never did."""
    keep = np.flatnonzero(data.y["attack"].numpy() != data.forget_class) if data.forget_class is not None \
        else np.arange(len(data.y["attack"]))
    return (torch.cat([data.x["attack"][keep], data.x_train[data.forget]]),
            torch.cat([data.y["attack"][keep], data.y_train[data.forget]]), len(keep))


def shadow_stage(sc: ShadowConfig) -> StageResult:
    """Train U-LiRA's K shadows together (`train_many`), each on its half of the shadow pool; the state holds
    their weights (`m{i}.` prefixes) and the pool membership."""
    data = cell_data(sc)
    x, y, _ = _shadow_pool(data)
    held = attacks.ulira.shadow_members(len(y), sc.seed, sc.k)
    models = [build_model(sc.model, derive_seed(sc.seed, "shadow-init", i) % 2**31, data.image_side) for i in range(sc.k)]
    costs = train_many(models, [(x[m], y[m]) for m in held], dict(sc.recipe),
                       [derive_seed(sc.seed, "shadow-train", i) for i in range(sc.k)], sc.train_shots)
    state = {f"m{i}.{k}": v for i, m in enumerate(models) for k, v in m.state_dict().items()}
    state["members"] = torch.from_numpy(held)
    return StageResult(state, _cost(sum(c.seconds for c in costs), sum(c.circuits for c in costs),
                                    sum(c.shots for c in costs), circuits_device=float(sum(c.device_circuits for c in costs))))


def replica_stage(rc: ReplicaConfig) -> StageResult:
    """Retrain the retain set from another initialisation and data order (replica `index`)."""
    data = cell_data(rc)
    model = _replica_model(rc, data.image_side)
    cost = fit(model, data.x_train[data.retain], data.y_train[data.retain], dict(rc.recipe), rc.train_shots,
               derive_seed(rc.seed, "replica-train", rc.index))
    return _replica_result(rc, model, cost)


def replica_group_stage(rcs: list[ReplicaConfig]) -> list[StageResult]:
    """Train replicas of one group (equal `group_id`) together with `train_many`; each result equals
    `replica_stage` of its config to 1e-10 in every weight (tests/test_grouped_references.py)."""
    _one_group(rcs, "replica")
    data = cell_data(rcs[0])
    models = [_replica_model(rc, data.image_side) for rc in rcs]
    retain = (data.x_train[data.retain], data.y_train[data.retain])
    costs = train_many(models, [retain] * len(rcs), dict(rcs[0].recipe),
                       [derive_seed(rc.seed, "replica-train", rc.index) for rc in rcs], rcs[0].train_shots)
    return [_replica_result(rc, m, c) for rc, m, c in zip(rcs, models, costs)]


def _replica_model(rc: ReplicaConfig, image_side: int) -> nn.Module:
    return build_model(rc.model, derive_seed(rc.seed, "replica-init", rc.index) % 2**31, image_side)


def _replica_result(rc: ReplicaConfig, model: nn.Module, cost: Any) -> StageResult:
    return StageResult({**model.state_dict(), REPLICA_KEY: torch.tensor(rc.index)},
                       _cost(cost.seconds, cost.circuits, cost.shots))


REPLICA_KEY = "replica.index"  # marks a replica's state among the evaluate stage's inputs


def ulira_stage(cfg: CellConfig, shadows: dict[str, torch.Tensor]) -> StageResult:
    """Unlearn each shadow with the cell's method on the forget samples it holds (`retrain`: all shadows
    retrained together on what they keep); the state holds the unlearned shadows' logit-scaled confidence on
    every forget sample and which of them each shadow held."""
    start = time.perf_counter()
    data = cell_data(cfg)
    recipe, params = resolve_params(cfg.model, cfg.method, cfg.params_dict())
    x, y, n_attack = _shadow_pool(data)
    held = shadows["members"].numpy()
    is_forget = np.arange(len(y)) >= n_attack
    models = []
    for i in range(len(held)):
        m = build_model(cfg.model, 0, data.image_side)
        m.load_state_dict({k[len(f"m{i}."):]: v for k, v in shadows.items() if k.startswith(f"m{i}.")})
        models.append(m)
    if cfg.method == "retrain":
        models = [build_model(cfg.model, derive_seed(cfg.seed, "shadow-retrain-init", i) % 2**31, data.image_side)
                  for i in range(len(held))]
        train_many(models, [(x[h & ~is_forget], y[h & ~is_forget]) for h in held], recipe,
                   [derive_seed(cfg.seed, "shadow-retrain", i) for i in range(len(held))], cfg.train_shots)
    else:
        models = _unlearn_shadows(cfg, data, recipe, params, models, x, y, held, is_forget)
    xf, yf = x[is_forget], y[is_forget]
    conf = np.stack([logit_confidence(_exact(m, xf), yf) for m in models])
    state = {"ulira.conf": torch.from_numpy(conf), "ulira.held": torch.from_numpy(held[:, is_forget])}
    return StageResult(state, _cost(time.perf_counter() - start, 0, 0))


def _unlearn_shadows(cfg: CellConfig, data: CellData, recipe: dict[str, Any], params: dict[str, Any],
                     models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, held: np.ndarray,
                     is_forget: np.ndarray) -> list[nn.Module]:
    """Each shadow unlearned as the cell's model is, on the forget samples of the cell's that it trained on;
    the random-forgetting stop target is its accuracy on the half of P_attack it never saw. A shadow that
    holds no forget sample stays as it is; the others are unlearned together where the method can
    (`unlearn_many`: ascents step K exact models at once)."""
    if cfg.method == "none":
        return models
    todo = [i for i in range(len(models)) if (held[i] & is_forget).any()]
    datas = [_shadow_data(data, params, models[i], x, y, held[i], is_forget) for i in todo]
    seeds = [derive_seed(cfg.seed, "shadow-unlearn", cfg.method, i) for i in todo]
    done = unlearn_many(cfg.method, [models[i] for i in todo], datas, recipe, params, cfg.unlearn_shots, seeds,
                        fresh=lambda: _model(cfg, data))
    out = list(models)
    for i, m in zip(todo, done):
        out[i] = m
    return out


def _shadow_data(data: CellData, params: dict[str, Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 held: np.ndarray, is_forget: np.ndarray) -> UnlearnData:
    forget, retain, unseen = held & is_forget, held & ~is_forget, ~held & ~is_forget
    stop = params.get("stop_acc", "auto")
    if stop == "auto":
        stop = 0.1 if data.forget_class is not None else accuracy(model, x[unseen], y[unseen])
    return UnlearnData(x[retain], y[retain], x[forget], y[forget], float(stop))


def _exact(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits_on(model, x, None, "torch", 0)[0]


def _query(model: nn.Module, data: CellData, rows: dict[str, np.ndarray], shots: Shots, backend: str,
           seed: int) -> tuple[Outputs, list[dict[str, Any]]]:
    """The model's logits on the given rows of each role, one query per role (in ROLES order)."""
    logits, costs = {}, []
    for i, role in enumerate(r for r in ROLES if r in rows):
        out, cost = logits_on(model, data.x[role][rows[role]], shots, backend, seed + i)
        logits[role] = out
        costs.append(cost)
    rows = {r: rows[r] for r in logits}
    return Outputs(rows, logits, {r: data.y[r][rows[r]] for r in rows}), costs


def _sum_costs(costs: list[dict[str, Any]]) -> dict[str, float]:
    """Circuits and shots of some queries, and QPU seconds only when the service reported them."""
    out = {"circuits": sum(c["circuits"] for c in costs), "shots": sum(c["shots"] for c in costs)}
    qpu = [c["qpu_seconds"] for c in costs if c.get("qpu_seconds") is not None]
    if qpu:
        out["qpu_seconds"] = float(sum(qpu))
    return out


def attack_stage(cfg: CellConfig, original: dict[str, torch.Tensor], *references: dict[str, torch.Tensor]) -> StageResult:
    """Fit the active attacks of the config's `attack_scope` (all of them without one) on what the attacker may
    see: the original model queried at the cell's eval shots on train, test and P_attack samples, and the
    reference models (if any, and if an attack of the scope reads them) queried on the torch executor."""
    start = time.perf_counter()
    data = cell_data(cfg)
    params = attack_params(cfg.params_dict())
    if len(references) != params["references"]["k"]:
        raise ValueError(f"attack stage needs {params['references']['k']} reference models, got {len(references)}")
    scoped = attacks.in_attack_stage(params)
    active = [a for a in attacks.active(params, cfg.attack_scope) if a in scoped]
    know = _know(cfg, data, params)
    q = derive_seed(cfg.seed, "attack-query", cfg.eval_shots)
    original_out, costs = _query(_model(cfg, data, original), data,
                                 attacks.merge_rows(*(a.queries(know) for a in active)), cfg.eval_shots, cfg.backend, q)
    refs, members = [], []
    want = attacks.merge_rows(*(a.reference_queries(know) for a in active))
    for i, ref in enumerate(references):
        members.append(reference_member_roles(ref))
        ref = {k: v for k, v in ref.items() if k != "members" and not k.startswith("members.")}
        if want:
            out, _ = _query(_model(cfg, data, ref), data, want, cfg.eval_shots, "torch",
                            derive_seed(cfg.seed, "reference-query", i, cfg.eval_shots))
            refs.append(out)
    view = attacks.AttackerView(know, original_out, tuple(refs), tuple(members))
    states, info = [], {}
    for a in active:
        state, extra = a.fit(view)
        states.append((a.NAME, state))
        info.update(extra)
    total = _sum_costs(costs)
    cost = _cost(time.perf_counter() - start, total["circuits"], total["shots"], **info,
                 **{k: v for k, v in total.items() if k == "qpu_seconds"})
    return StageResult(attacks.pack(states), cost, info)


def evaluate_stage(
    cfg: CellConfig,
    original: dict[str, torch.Tensor],
    unlearned: dict[str, torch.Tensor],
    *attack_states: dict[str, torch.Tensor],
    costs: dict[str, dict[str, float]],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics row and per-example rows of the evaluated (unlearned) model (docs/metrics.md), given the
    states of its attack stages (each attack's keys carry its name, so they merge into one).

    Every attack is scored on the forget set (members) against held-out P_eval non-members: of the forget
    class for class forgetting, all of P_eval for random forgetting."""
    start = time.perf_counter()
    data = cell_data(cfg)
    params = attack_params(cfg.params_dict())
    active = attacks.active(params)
    replicas = [st for st in attack_states if REPLICA_KEY in st]
    shadows = next((st for st in attack_states if "ulira.conf" in st), None)
    # by key and identity: `in` would compare two replicas' tensors with ==
    attack = {k: v for st in attack_states if REPLICA_KEY not in st and st is not shadows for k, v in st.items()}
    states = {a.NAME: attacks.unpack(attack, a.NAME) for a in active}
    if shadows is not None:
        states["ulira"] = attacks.ulira.from_shadows(shadows["ulira.conf"].numpy(), shadows["ulira.held"].numpy(),
                                                     data.forget)
    unlearned, trajectory = split_unlearned(unlearned)
    want = _evaluate_rows(cfg, data, params, active)
    out, qcosts = _query(_model(cfg, data, unlearned), data, want, cfg.eval_shots, cfg.backend,
                         derive_seed(cfg.seed, "eval", cfg.eval_shots))
    fit_start = time.perf_counter()
    for a in attacks.fitted_on_target(params):  # the attacker holds the released model: fit on its outputs
        states[a.NAME], _ = a.fit(attacks.AttackerView(_know(cfg, data, params), out))
    fit_seconds = time.perf_counter() - fit_start
    tr, te = _eval_indices(cfg, data)  # the attack's own queries may have added train rows: not evaluated
    out = out.only(train=tr, test=te)
    f = np.flatnonzero(np.isin(out.rows["train"], data.forget))
    row: dict[str, Any] = {"attack_fit_evaluate_seconds": fit_seconds}
    scores: dict[str, dict[str, np.ndarray]] = {}
    retrained = _retrained_outputs(cfg, data, replicas, out) if shadows is not None else None
    for a in active:
        scores[a.NAME] = a.score(states[a.NAME], out, params)
        nonmembers = scores[a.NAME]["eval"]
        if getattr(a, "NEEDS_SHADOWS", False):  # its non-members: the same forget samples on a retrained model
            nonmembers = a.score(states[a.NAME], retrained, params)["train"][f]
            scores[a.NAME]["retrained"] = nonmembers
        row.update(a.columns(scores[a.NAME]["train"][f], nonmembers, params, states[a.NAME]))
    n_scored = len(want["eval"])
    row.update({"mia_fpr_floor": metrics.fpr_floor(n_scored), "n_nonmembers_scored": n_scored,
                "n_forget": len(data.forget), "n_forget_evaluated": len(f)})
    row.update(_utility(cfg, data, out, f))
    if cfg.method == "retrain" and replicas:
        row.update(_floor_columns(cfg, data, replicas, out, f))
    row.update(_cost_columns(costs, _sum_costs(qcosts), time.perf_counter() - start))
    row.update(unlearn_columns(cfg, costs, trajectory))
    row.update(_provenance(*qcosts))
    ref = cfg.circuit or model_spec(cfg.model).circuit  # a grid's circuit model, or a built-in without a kernel
    row.update(circuit_provenance(ref) if ref is not None else {})
    return row, _examples(data, out, scores, f, active)


def _retrained_outputs(cfg: CellConfig, data: CellData, replicas: list[dict[str, torch.Tensor]], out: Outputs) -> Outputs:
    """The first retrain replica's outputs on the evaluated train rows, at the cell's eval shots."""
    if not replicas:
        raise ValueError("evaluate: U-LiRA needs a retrain replica stage (replica.0)")
    weights = {k: v for k, v in replicas[0].items() if k != REPLICA_KEY}
    rep, _ = _query(_model(cfg, data, weights), data, {"train": out.rows["train"]}, cfg.eval_shots, "torch",
                    derive_seed(cfg.seed, "replica-query", cfg.eval_shots))
    return rep


FLOOR_COLUMNS = ("floor_kl_forget", "floor_kl_test", "floor_js_forget", "floor_js_test", "floor_loss_ks",
                 "floor_loss_auc")


def _floor_columns(cfg: CellConfig, data: CellData, replicas: list[dict[str, torch.Tensor]], out: Outputs,
                   f: np.ndarray) -> dict[str, float]:
    """The retrain-to-retrain noise floor: each replica against this retrained model on the same samples (KL
    and JS distance of the outputs on the forget and test sets, the loss KS statistic on the forget set, and
    the change of the loss attack's AUC), averaged over the replicas. Replicas are queried on the torch
    simulator at the cell's eval shots, as U-LiRA's is."""
    from scipy.stats import ks_2samp

    rows = {"train": out.rows["train"][f], "test": out.rows["test"], "eval": _scored_nonmembers(cfg, data)}
    mine = {r: out.at(r, rows[r])[0] for r in rows}
    probs = lambda lg: F.softmax(lg, 1).numpy()  # noqa: E731
    loss = lambda lg, r: F.cross_entropy(lg, data.y[r][rows[r]], reduction="none").numpy()  # noqa: E731
    auc = lambda lg: metrics.auc(-loss(lg["train"], "train"), -loss(lg["eval"], "eval"))  # noqa: E731
    my_loss, my_auc = loss(mine["train"], "train"), auc(mine)
    per = []
    for i, st in enumerate(replicas):
        weights = {k: v for k, v in st.items() if k != REPLICA_KEY}
        rep, _ = _query(_model(cfg, data, weights), data, rows, cfg.eval_shots, "torch",
                        derive_seed(cfg.seed, "floor-query", cfg.eval_shots, i))
        kl_f, js_f = metrics.output_distances(probs(mine["train"]), probs(rep.logits["train"]))
        kl_t, js_t = metrics.output_distances(probs(mine["test"]), probs(rep.logits["test"]))
        per.append((kl_f, kl_t, js_f, js_t, float(ks_2samp(my_loss, loss(rep.logits["train"], "train")).statistic),
                    auc(rep.logits) - my_auc))
    return {**dict(zip(FLOOR_COLUMNS, np.mean(per, axis=0).tolist())), "retrain_replicas": len(replicas) + 1}


def _know(cfg: CellConfig, data: CellData, params: dict[str, dict[str, Any]]) -> Knowledge:
    return Knowledge(data.sizes(), data.retain, data.forget, params, cfg.seed, data.y["attack"].numpy(),
                     data.forget_class)


def _evaluate_rows(cfg: CellConfig, data: CellData, params: dict[str, dict[str, Any]],
                   active: list[Any]) -> dict[str, np.ndarray]:
    """Rows the evaluate stage queries: train and test (utility, forget members), the scored P_eval
    non-members, and what the attacks need beyond them (RMIA's population samples)."""
    tr, te = _eval_indices(cfg, data)
    scored = {"train": tr, "test": te, "eval": _scored_nonmembers(cfg, data)}
    know = _know(cfg, data, params)
    return attacks.merge_rows(scored, *(a.target_rows(know) for a in active),
                              *(a.queries(know) for a in attacks.fitted_on_target(params)))


def query_counts(cfg: CellConfig) -> dict[str, int]:
    """Samples (circuits) the attack and evaluate stages of `cfg` query on its backend."""
    data = cell_data(cfg)
    params = attack_params(cfg.params_dict())
    active = attacks.active(params)
    attack = attacks.merge_rows(*(a.queries(_know(cfg, data, params)) for a in attacks.in_attack_stage(params)))
    return {"attack": sum(map(len, attack.values())),
            "evaluate": sum(map(len, _evaluate_rows(cfg, data, params, active).values()))}


def _scored_nonmembers(cfg: CellConfig, data: CellData) -> np.ndarray:
    """P_eval positions scored as non-members: the forget class's, or all for random forgetting (<= n_eval)."""
    y = data.y["eval"].numpy()
    rows = np.flatnonzero(y == data.forget_class) if data.forget_class is not None else np.arange(len(y))
    if cfg.n_eval is not None and len(rows) > cfg.n_eval:
        rng = np.random.default_rng(derive_seed(cfg.seed, "eval-subsample-population", cfg.forget))
        rows = np.sort(rng.choice(rows, size=cfg.n_eval, replace=False))
    return rows


def _utility(cfg: CellConfig, data: CellData, out: Outputs, f: np.ndarray) -> dict[str, float]:
    pred_tr, y_tr = out.logits["train"].argmax(1).numpy(), out.labels["train"].numpy()
    pred_te, y_te = out.logits["test"].argmax(1).numpy(), out.labels["test"].numpy()
    r = np.setdiff1d(np.arange(len(y_tr)), f)
    test_forget = y_te == data.forget_class if data.forget_class is not None else np.zeros_like(y_te, bool)
    return {"acc_train_retain": _acc(pred_tr, y_tr, r), "acc_train_forget": _acc(pred_tr, y_tr, f),
            "acc_test_retain": _acc(pred_te, y_te, np.flatnonzero(~test_forget)),
            "acc_test_forget": _acc(pred_te, y_te, np.flatnonzero(test_forget))}


def _cost_columns(costs: dict[str, dict[str, float]], evaluation: dict[str, float], seconds: float) -> dict[str, Any]:
    """Seconds per stage, circuits and shots of the whole cell, and QPU seconds only where reported."""
    stage = lambda name: costs.get(name, {})  # noqa: E731
    parts = [stage(s) for s in ("train", "unlearn", "attack")] + [evaluation]
    qpu = [p["qpu_seconds"] for p in (stage("attack"), evaluation) if p.get("qpu_seconds") is not None]
    return {
        "attack_train_acc": stage("attack").get("attack_train_acc", math.nan),
        "heldout_train_acc": stage("attack").get("heldout_train_acc", math.nan),
        "train_seconds": stage("train").get("seconds", 0.0),
        "unlearn_seconds": stage("unlearn").get("seconds", 0.0),
        "attack_seconds": stage("attack").get("seconds", 0.0),
        "eval_seconds": seconds,
        "unlearn_circuits": stage("unlearn").get("circuits", 0.0),
        "unlearn_shots_total": stage("unlearn").get("shots", 0.0),
        "eval_circuits": evaluation["circuits"],
        "circuit_executions": sum(p.get("circuits", 0.0) for p in parts),
        "shots_total": sum(p.get("shots", 0.0) for p in parts),
        "qpu_seconds": float(sum(qpu)) if qpu else None,
        "qpu_seconds_reported": bool(qpu),
    }


def _examples(data: CellData, out: Outputs, scores: dict[str, dict[str, np.ndarray]], f: np.ndarray,
              active: list[Any]) -> pd.DataFrame:
    """One row per evaluated train and test sample and per scored P_eval non-member (split `population`)."""
    roles = ("train", "test", "eval")
    in_forget = np.zeros(len(out.rows["train"]), bool)
    in_forget[f] = True
    split = np.r_[np.where(in_forget, "train_forget", "train_retain"), np.full(len(out.rows["test"]), "test"),
                  np.full(len(out.rows["eval"]), "population")]
    logits = torch.cat([out.logits[r] for r in roles])
    labels = torch.cat([out.labels[r] for r in roles])
    probs = F.softmax(logits, dim=1).numpy()
    df = pd.DataFrame({
        "split": split,
        "sample_index": np.concatenate([out.rows[r] for r in roles]).astype(np.int64),
        "label": labels.numpy().astype(np.int64),
        "prediction": logits.argmax(1).numpy().astype(np.int64),
        "loss": F.cross_entropy(logits, labels, reduction="none").numpy(),
    })
    for a in active:
        if a.SCORE_COLUMN:  # an attack fit with several seeds scores [n, seeds]: its mean per sample
            col = np.concatenate([scores[a.NAME][r] for r in roles])
            df[a.SCORE_COLUMN] = col.mean(axis=1) if col.ndim == 2 else col
        if "retrained" in scores[a.NAME]:  # U-LiRA: each forget sample's score on the retrained model too
            col = np.full(len(df), np.nan)
            col[np.flatnonzero(in_forget)] = scores[a.NAME]["retrained"]
            df[f"{a.SCORE_COLUMN}_retrained"] = col
    for c in range(probs.shape[1]):
        df[f"prob_{c}"] = probs[:, c]
    df["dataset_index"] = np.concatenate([data.dataset_index[r][out.rows[r]] for r in roles]).astype(np.int64)
    return df


def _eval_indices(cfg: CellConfig, data: CellData) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices to evaluate: all, or a seeded subsample of n_eval per split."""
    n_train, n_test = len(data.y["train"]), len(data.y["test"])
    if cfg.n_eval is None:
        return np.arange(n_train), np.arange(n_test)
    rng = np.random.default_rng(derive_seed(cfg.seed, "eval-subsample", cfg.forget))
    pick = lambda idx: np.sort(rng.choice(idx, size=min(cfg.n_eval, len(idx)), replace=False))  # noqa: E731
    return np.sort(np.r_[pick(data.retain), pick(data.forget)]), pick(np.arange(n_test))


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
    errors = list(dict.fromkeys(c["qpu_seconds_error"] for c in costs if c.get("qpu_seconds_error")))
    if errors:  # a failed usage read or an unreadable repetition delay, never silent
        out["qpu_seconds_error"] = "; ".join(errors)
    return out


def _acc(pred: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    return float((pred[idx] == y[idx]).mean()) if len(idx) else math.nan


def run_cell(cfg: CellConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """All stages of one cell in-process (no reuse): the reference for what the harness computes."""
    train = train_stage(cfg)
    k = attack_params(cfg.params_dict())["references"]["k"]
    refs = reference_group_stage([reference_config(cfg, i) for i in range(k)]) if k else []
    un = unlearn_stage(cfg, train.state)
    att = attack_stage(cfg, train.state, *(r.state for r in refs))
    replicas = [replica_config(cfg, int(n.split(".")[1])) for n in stage_specs(cfg) if n.startswith("replica.")]
    extra = [r.state for r in replica_group_stage(replicas)] if replicas else []
    if attack_params(cfg.params_dict())["ulira"]["k"]:
        extra.append(ulira_stage(cfg, shadow_stage(shadow_config(cfg)).state).state)
    return evaluate_stage(cfg, train.state, un.state, att.state, *extra,
                          costs={"train": train.cost, "unlearn": un.cost, "attack": att.cost})


def catalog() -> dict[str, Any]:
    """The registries as the report shows them (labels, order, columns); the harness stores it with each
    grid's manifest, so that reports read it from the store."""
    methods = {n: {"label": m.LABEL, "order": m.ORDER, "summary": m.SUMMARY, "touches": list(m.TOUCHES),
                   "stops": stops(n)} for n, m in METHODS.items()}
    attacks_ = {n: {"label": a.LABEL, "order": a.ORDER, "columns": {c: list(v) for c, v in a.COLUMNS.items()},
                    "score_column": a.SCORE_COLUMN, "roc_prefix": a.ROC_PREFIX} for n, a in attacks.ATTACKS.items()}
    return {"methods": methods, "attacks": attacks_}
