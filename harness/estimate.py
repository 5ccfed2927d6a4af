"""Rough cost model of a stage (seconds on one core, circuit executions, shots) for `--dry-run` and for
the scheduler's priorities. It only needs to rank stages and warn before hours of work, so it is a few
calibrated constants times the work counts of docs/methods.md and docs/metrics.md, not a simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .identity import Plan

# Seconds per sample-pass on one core with the torch executor, exact gradients (forward + backward); the qnn
# cost scales with layers. From grids/methods.yaml on a quiet 2-core machine (2026-12-02, 54 min, 6,456 worker
# seconds; `benchmarks/calibrate_cost.py`): the trainings (train, references, shadows, replicas, retrain) ran at
# 0.49-0.59x the former 0.6e-3 (hqnn) and 0.29-0.38x the former 0.04e-3 (qnn), measured on an older, slower
# VM. The paper grid's run on the same kind of machine (1 h 01 min against an estimate of 1 h 41 min) agrees.
_SEC_PER_SAMPLE_STEP = {"hqnn": 0.35e-3, "qnn": 0.015e-3}
# One parameter-shift circuit sampled with shots, batched: about a + b*L seconds (measured at L=1 and 10).
_SEC_PER_CIRCUIT_SHOTS = (3.2e-5, 3.3e-6)
# One 13-64-64-1 MLP, 1000 full-batch epochs at 1.36 ms (bench_attack.py); K trained together cost about
# 0.3 + 0.7 K of one (the batched layers share their overhead, the dropout masks and products do not).
_SEC_ATTACK_FIT = 1.4
_DATASET_SIZE = {"mnist": 5000, "digits": 1797}
# Speed-up of K models trained together (train_many) over the same K one after the other, per model family:
# benchmarks/bench_many.py, one epoch of 1000 MNIST samples, best of 2, the same run timing both ways
# (2026-12-03, 2-core dev VM at load 0.9-1.7; stacks of at most STACK_LIMIT models, workloads/models/batched.py):
# hqnn-l1 1.27x at K=2, 1.32-1.53x at K=4 (two runs), 1.37x at K=8, 1.33x at K=16, 1.44x at K=32; qnn-l10 1.03x,
# 1.13x, 1.09-1.19x, 1.16-1.23x and 1.20x. The lower readings are kept, so that an estimate does not promise
# what a busy machine will not give. Between measured K the speed-up is interpolated in log K, and held beyond
# the last. A lone model in a group trains by `fit`.
GROUP_SPEEDUP = {"hqnn": ((1, 1.0), (2, 1.27), (4, 1.32), (16, 1.33)), "qnn": ((1, 1.0), (4, 1.13), (16, 1.16))}
_TREE_SHIFTS = 2 * 255  # amplitude-embedding input gradient (HQNN front end), docs/methods.md


def group_share(model: str, k: int) -> float:
    """Share of one model's training time that each of k models trained together costs (1 / speed-up)."""
    from workloads.models import MODELS, compiled_only

    if compiled_only(model):  # train_many trains these one by one
        return 1.0
    points = GROUP_SPEEDUP.get(MODELS[model].family, ((1, 1.0),))
    k = min(max(k, 1), points[-1][0])
    for (k0, s0), (k1, s1) in zip(points, points[1:]):
        if k <= k1:
            return 1.0 / (s0 + (s1 - s0) * math.log(k / k0) / math.log(k1 / k0))
    return 1.0 / points[-1][1]


@dataclass(frozen=True)
class StageCost:
    seconds: float
    circuits: float
    shots: float

    def __add__(self, o: "StageCost") -> "StageCost":
        return StageCost(self.seconds + o.seconds, self.circuits + o.circuits, self.shots + o.shots)


ZERO = StageCost(0.0, 0.0, 0.0)


def _passes(model: str, samples: float, shots: int | None, group: int = 1) -> StageCost:
    """`samples` forward+backward passes of `model` (gradients by autograd, or parameter shift with shots), as
    a share of `group` models trained together: exact, their speed-up shortens the seconds (not the circuits);
    with shots each model trains alone."""
    from workloads.models import MODELS

    spec = MODELS[model]
    per = _per_sample(model)
    if shots is None:
        return StageCost(samples * per * group_share(model, group), samples, 0.0)
    circuits_per = 1 + 2 * 24 * spec.n_layers  # forward plus +-pi/2 on every U3 angle
    if spec.family == "hqnn":
        circuits_per += _TREE_SHIFTS if spec.encoding == "amplitude" else 2 * 8
    circuits = samples * circuits_per
    a, b = _SEC_PER_CIRCUIT_SHOTS
    return StageCost(samples * per + circuits * (a + b * spec.n_layers), circuits, circuits * shots)


def _per_sample(model: str) -> float:
    """Seconds of one forward+backward pass of one sample."""
    from workloads.models import MODELS

    spec = MODELS[model]
    return _SEC_PER_SAMPLE_STEP[spec.family] * (spec.n_layers if spec.family == "qnn" else 1)


def _forward(model: str, samples: float, shots: int | None) -> StageCost:
    """`samples` forward passes: about a third of a training pass (evaluation of the paper grid: 1.2 s per
    cell on hqnn-l1, 0.45 s on qnn-l10, for about 3,000 samples)."""
    return StageCost(samples * _per_sample(model) / 3 + (samples * _SEC_PER_CIRCUIT_SHOTS[0] if shots else 0.0),
                     samples, samples * (shots or 0))


def _population_half(cfg: Any) -> int:
    """Size of P_attack (and of P_eval): half of what train and test leave of the dataset."""
    return max(0, _DATASET_SIZE.get(cfg.dataset, 5000) - cfg.n_train - cfg.n_test) // 2


def stage_estimate(kind: str, cfg: Any) -> StageCost:
    """Estimated cost of one stage of `cfg`; a flat 1 s for workloads the registry does not know."""
    if kind in ("reference", "shadow", "replica"):
        try:
            return _trained(kind, cfg)
        except (AttributeError, KeyError, ImportError):
            return StageCost(1.0, 0.0, 0.0)
    try:
        from workloads.hparams import attack_params, resolve_params

        recipe, mp = resolve_params(cfg.model, cfg.method, cfg.params_dict())
        ap = attack_params(cfg.params_dict())
    except (ImportError, ValueError, KeyError):
        return StageCost(1.0, 0.0, 0.0)
    n_forget = _forget_size(cfg)
    k, n_z = ap["references"]["k"], ap["rmia"]["n_population"] if ap["references"]["k"] else 0
    half = _population_half(cfg)
    scored = half if cfg.forget.startswith("random") else half // 10
    if kind == "train":  # as its share of the grid's seeds trained together (group_size, set by the plan)
        return _passes(cfg.model, cfg.n_train * recipe["epochs"], cfg.train_shots, getattr(cfg, "group_size", None) or 1)
    if kind == "ulira":  # each of K shadows unlearned as the cell's model is (retrain: K trained together)
        from workloads.models import MODELS
        from workloads.unlearning import METHODS, Workload, unlearns_together

        k, pool = ap["ulira"]["k"], _population_half(cfg) // 2 + n_forget // 2
        work = Workload(MODELS[cfg.model].family, pool, n_forget // 2, recipe, mp, shadow=True)
        # Ascents step the K shadows together (unlearn_many); priced at the training groups' speed-up, below
        # what they measured (bench_many.py --ulira: GA 1.73x, GradDiff 1.41x at K = 8).
        together = cfg.method == "retrain" or unlearns_together(cfg.method, mp, cfg.unlearn_shots)
        return _passes(cfg.model, k * METHODS[cfg.method].passes(work), cfg.unlearn_shots, k if together else 1)
    if kind == "unlearn":  # the method's own cost model, in sample passes (its module in workloads/unlearning/)
        from workloads.models import MODELS
        from workloads.unlearning import METHODS, Workload

        work = Workload(MODELS[cfg.model].family, cfg.n_train, n_forget, recipe, mp)
        return _passes(cfg.model, METHODS[cfg.method].passes(work), cfg.unlearn_shots)
    if kind == "attack":  # `shared`: study, loss, RMIA, LiRA (and the references); `forget`: heldout
        scope = getattr(cfg, "attack_scope", None)
        nonmembers = min(ap["attack"]["n_nonmembers"], half)
        if scope == "shared":
            rows, fits = cfg.n_train + cfg.n_test, 1
        elif scope == "forget":
            rows, fits, k = ap["attack"]["n_members"] + nonmembers, 1, 0
        else:  # one stage with every attack (the hardware path)
            rows, fits = cfg.n_train + cfg.n_test + nonmembers, 2
        c = _forward(cfg.model, rows, cfg.eval_shots)
        refs = _forward(cfg.model, k * (cfg.n_train + half + min(n_z, half)), cfg.eval_shots)
        return StageCost(c.seconds + refs.seconds + fits * _SEC_ATTACK_FIT, c.circuits, c.shots)
    # evaluate, with the held-out attack fit there on the evaluated model (attack.fit_on: released): its
    # P_attack rows and n_seeds MLPs trained together
    c = _forward(cfg.model, cfg.n_train + cfg.n_test + scored + min(n_z, half), cfg.eval_shots)
    if ap["attack"]["fit_on"] != "released":
        return c
    rows = _forward(cfg.model, half, cfg.eval_shots)
    fit = _SEC_ATTACK_FIT * (0.3 + 0.7 * ap["attack"]["n_seeds"])
    return StageCost(c.seconds + rows.seconds + fit, c.circuits + rows.circuits, c.shots + rows.shots)


def _trained(kind: str, cfg: Any) -> StageCost:
    """A reference model (one half of its pool: P_attack, or online the train set and P_eval) as its share of
    the group of the cell's K that the runner trains together, K shadows trained together (halves of P_attack
    plus the forget set) or a retrain replica (the retain set) as its share of the cell's replicas trained
    together, each for its recipe's epochs. Shots train each model alone (train_many), so a group with shots
    costs what its models cost one by one."""
    epochs = dict(cfg.recipe)["epochs"]
    if kind == "reference":
        pool = _population_half(cfg) + (cfg.n_train if getattr(cfg, "mode", "offline") == "online" else 0)
        return _passes(cfg.model, (pool // 2) * epochs, cfg.train_shots, cfg.group_size)
    if kind == "shadow":
        samples = (_population_half(cfg) + _forget_size(cfg)) // 2 * epochs
        return _passes(cfg.model, cfg.k * samples, cfg.train_shots, cfg.k)
    return _passes(cfg.model, (cfg.n_train - _forget_size(cfg)) * epochs, cfg.train_shots, cfg.group_size)


def _forget_size(cfg: Any) -> int:
    kind, _, value = cfg.forget.partition(":")
    return int(value) if kind == "random" else cfg.n_train // 10


@dataclass(frozen=True)
class PlanEstimate:
    cells: int
    stages: dict[str, int]  # kind -> stages to run
    reused: dict[str, int]  # kind -> stages whose artifacts are stored
    cost: StageCost  # of the stages to run
    wall_seconds: float  # on `workers` actors, assuming perfect packing bounded by the longest chain


def plan_estimate(plan: Plan, has_artifact, workers: int) -> PlanEstimate:
    """Totals for the stages of `plan` still to run (`has_artifact(key)` tells which are stored)."""
    stages: dict[str, int] = {}
    reused: dict[str, int] = {}
    total = ZERO
    for s in plan.stages.values():
        if s.kind != "evaluate" and has_artifact(s.key):
            reused[s.kind] = reused.get(s.kind, 0) + 1
            continue
        stages[s.kind] = stages.get(s.kind, 0) + 1
        total = total + stage_estimate(s.kind, s.cfg)
    chain = 0.0
    for c in plan.cells:  # the longest train -> unlearn -> evaluate chain bounds the wall time from below
        t = sum(stage_estimate(k, c.cfg).seconds for k in ("train", "unlearn", "evaluate")
                if not (k != "evaluate" and has_artifact(c.keys[k])))
        chain = max(chain, t)
    return PlanEstimate(len(plan.cells), stages, reused, total, max(total.seconds / max(workers, 1), chain))
