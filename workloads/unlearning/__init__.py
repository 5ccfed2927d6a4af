"""Unlearning methods: one module each, one line each in METHODS.

A method's module carries everything the rest of the project reads about it:
  NAME, LABEL, ORDER (report order), SUMMARY, TOUCHES (the parameter groups it changes: "front end",
  "angles", "head"), STOPS (optional: ascends until the recorded stop rule fires), PARAMS (its
  hyper-parameters with defaults and ranges, and the measured reason for each default),
  passes(Workload) -> float   its cost model: sample passes (forward + backward) it runs, which the
                              harness prices in seconds and device circuits,
  run(model copy, UnlearnData, recipe, params, shots, seed, fresh) -> Outcome,
  run_many(models, [UnlearnData], recipe, params, seeds) -> [info]   (optional: K exact models at once,
                              in place, each as `run` would; `unlearn_many` uses it).
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Any, Sequence

from torch import nn

from ..models.batched import stackable
from ..registry import members
from . import (cf_k, eu_k, finetune, fisher, ga, graddiff, l1_sparse, neggrad_plus, none, random_label, retrain, rga,
               salun, scrub, ssd)
from .ascent import describe_stop
from .base import Fresh, Outcome, UnlearnData, Workload
from .relearn import relearn_steps

REQUIRED = ("NAME", "LABEL", "ORDER", "SUMMARY", "TOUCHES", "PARAMS", "passes", "run")
METHODS: dict[str, ModuleType] = members(REQUIRED, none, retrain, finetune, ga, ssd, rga, graddiff, random_label,
                                      neggrad_plus, scrub, salun, l1_sparse, fisher, cf_k, eu_k)

__all__ = ["METHODS", "Outcome", "UnlearnData", "Workload", "describe_stop", "relearn_steps", "stops", "unlearn",
           "unlearn_many", "unlearns_together"]


def stops(method: str) -> bool:
    """Whether `method` ascends until its recorded stop rule fires."""
    return bool(getattr(METHODS[method], "STOPS", False))


def unlearn(method: str, original: nn.Module, data: UnlearnData, recipe: dict[str, Any], params: dict[str, Any],
            shots: int | None, seed: int, fresh: Fresh) -> Outcome:
    """Apply `method` to a copy of `original`; `fresh` builds an untrained model for `retrain`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method].run(copy.deepcopy(original), data, recipe, params, shots, seed, fresh)


def unlearn_many(method: str, originals: Sequence[nn.Module], datas: Sequence[UnlearnData], recipe: dict[str, Any],
                 params: dict[str, Any], shots: int | None, seeds: Sequence[int], fresh: Fresh) -> list[nn.Module]:
    """Each original unlearned as `unlearn` would (a copy, returned); a method with `run_many` steps K exact
    models at once."""
    if len(originals) > 1 and stackable(originals[0]) and unlearns_together(method, params, shots):
        models = [copy.deepcopy(m) for m in originals]
        METHODS[method].run_many(models, datas, recipe, params, seeds)
        return models
    return [unlearn(method, m, d, recipe, params, shots, s, fresh).model for m, d, s in zip(originals, datas, seeds)]


def unlearns_together(method: str, params: dict[str, Any], shots: int | None) -> bool:
    """Whether `unlearn_many` steps a group of this method's models at once (the built-ins' kernel permitting):
    it has `run_many`, the outputs are exact, and a gate is computed once (`refresh_every` 0)."""
    return (method in METHODS and hasattr(METHODS[method], "run_many") and shots is None
            and not params.get("refresh_every", 0))
