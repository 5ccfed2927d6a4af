"""A trivial workload with the interface of `workloads.stages`, for harness tests and the overhead benchmark.

Its stages do almost nothing (tiny tensors, optional sleep), so timing it measures the harness itself.
Knobs come from the cell's params section `trivial`: `sleep` (seconds per stage), `fail_method` (the
unlearn stage of that method raises), `fail_if_exists` (unlearn stages other than `none` raise while that
file exists), `crash_method` (the unlearn stage of that method kills its process), `examples` (rows per cell).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch

code_version = "trivial-1"


@dataclass(frozen=True)
class CellConfig:
    model: str
    forget: str
    method: str
    train_shots: int | None
    unlearn_shots: int | None
    eval_shots: int | None
    seed: int
    backend: str = "torch"
    dataset: str = "digits"
    n_train: int = 200
    n_test: int = 100
    params: tuple = ()

    def with_params(self, params: dict[str, dict[str, Any]]) -> "CellConfig":
        return replace(self, params=tuple(sorted((s, tuple(sorted(v.items()))) for s, v in params.items())))

    def params_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self.params}


@dataclass(frozen=True)
class StageResult:
    state: dict[str, torch.Tensor]
    cost: dict[str, float]


_KNOBS = {"sleep": 0.0, "fail_method": "", "crash_method": "", "fail_if_exists": "", "examples": 4}


def resolve_params(model: str, method: str, overrides: dict[str, dict[str, Any]] | None = None):
    """Like `workloads.hparams.resolve_params`, plus a `trivial` section holding this module's knobs."""
    from workloads.hparams import resolve_params as real

    overrides = dict(overrides or {})
    knobs = overrides.pop("trivial", {})
    for k in knobs:
        if k not in _KNOBS:
            raise ValueError(f"params.trivial: unknown key {k!r}; valid keys: {', '.join(sorted(_KNOBS))}")
    return real(model, method, overrides)


def _knob(cfg: CellConfig, key: str, default: Any) -> Any:
    return cfg.params_dict().get("trivial", {}).get(key, default)


def _work(cfg: CellConfig) -> float:
    t0 = time.perf_counter()
    if s := _knob(cfg, "sleep", 0.0):
        time.sleep(s)
    return time.perf_counter() - t0


def stage_specs(cfg: CellConfig) -> dict[str, dict]:
    base = {"model": cfg.model, "seed": cfg.seed, "dataset": cfg.dataset, "n_train": cfg.n_train,
            "n_test": cfg.n_test, "train_shots": cfg.train_shots, "params": cfg.params_dict()}
    return {
        "train": base,
        "unlearn": {"method": cfg.method, "forget": cfg.forget, "unlearn_shots": cfg.unlearn_shots},
        "attack": {"eval_shots": cfg.eval_shots, "backend": cfg.backend},
        "evaluate": {"method": cfg.method, "forget": cfg.forget, "eval_shots": cfg.eval_shots,
                     "backend": cfg.backend},
    }


def train_stage(cfg: CellConfig) -> StageResult:
    s = _work(cfg)
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(cfg.seed))
    return StageResult({"w": w}, {"seconds": s, "circuits": 10.0, "shots": 0.0})


def unlearn_stage(cfg: CellConfig, original: dict[str, torch.Tensor]) -> StageResult:
    flag = _knob(cfg, "fail_if_exists", "")
    if cfg.method == _knob(cfg, "fail_method", None) or (flag and cfg.method != "none" and os.path.exists(flag)):
        raise RuntimeError(f"trivial failure of method {cfg.method}")
    if cfg.method == _knob(cfg, "crash_method", None):
        os._exit(1)  # a worker process dying mid-stage, as an OOM kill or segfault would
    if cfg.method == "none":
        return StageResult(original, {"seconds": 0.0, "circuits": 0.0, "shots": 0.0})
    s = _work(cfg)
    return StageResult({"w": original["w"] * 0.5}, {"seconds": s, "circuits": 5.0, "shots": 0.0})


def attack_stage(cfg: CellConfig, original: dict[str, torch.Tensor]) -> StageResult:
    s = _work(cfg)
    return StageResult({"a": original["w"].sum(0)}, {"seconds": s, "circuits": 3.0, "shots": 0.0})


def evaluate_stage(cfg: CellConfig, original: dict[str, torch.Tensor], unlearned: dict[str, torch.Tensor],
                   attack: dict[str, torch.Tensor], *, costs: dict[str, dict]) -> tuple[dict, pd.DataFrame]:
    s = _work(cfg)
    score = float(torch.sigmoid(unlearned["w"].sum() + attack["a"].sum()))
    row = {"mia_success": score, "mia_success_lo": score * 0.9, "mia_success_hi": min(1.0, score * 1.1),
           "mia_auc": 0.5, "acc_test_retain": 1.0 - score / 2,
           "train_seconds": costs["train"]["seconds"], "unlearn_seconds": costs["unlearn"]["seconds"],
           "eval_seconds": s, "circuit_executions": sum(c.get("circuits", 0.0) for c in costs.values()),
           "shots_total": 0, "qpu_seconds": None}
    n = int(_knob(cfg, "examples", 4))
    examples = pd.DataFrame({"split": ["train_forget"] * n, "sample_index": range(n), "label": [4] * n,
                             "prediction": [4] * n, "loss": [0.1] * n, "attack_score": [score] * n})
    return row, examples
