"""Unlearning methods: one module each, one line each in METHODS.

The grid validation, the hyper-parameter defaults (`workloads/hparams.py`, keyed by these names) and
the docs read this table. Every method maps (original model copy, data, training recipe, its
hyper-parameters, shots, seed, a builder of fresh models) to an Outcome.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import finetune, ga, graddiff, none, retrain, rga, ssd
from .ascent import describe_stop
from .base import Fresh, Outcome, Run, UnlearnData
from .relearn import relearn_steps


@dataclass(frozen=True)
class Method:
    run: Run
    summary: str
    stops: bool = False  # ascends until the recorded stop rule fires (and logs a trajectory)


METHODS: dict[str, Method] = {
    "none": Method(none.run, "the original model, the leakage baseline"),
    "retrain": Method(retrain.run, "train from scratch on the retain set with the original recipe"),
    "finetune": Method(finetune.run, "continue training on the retain set for a few epochs"),
    "ga": Method(ga.run, "gradient ascent on the forget set until the stop rule fires", stops=True),
    "ssd": Method(ssd.run, "selective synaptic dampening of parameters important to the forget set"),
    "rga": Method(rga.run, "gradient ascent gated by SSD's importances (relative gradient ascent)", stops=True),
    "graddiff": Method(graddiff.run, "descent on retain batches, ascent on forget batches (GradDiff)", stops=True),
}

__all__ = ["METHODS", "Method", "Outcome", "UnlearnData", "describe_stop", "relearn_steps", "unlearn"]


def unlearn(method: str, original: nn.Module, data: UnlearnData, recipe: dict[str, Any], params: dict[str, Any],
            shots: int | None, seed: int, fresh: Fresh) -> Outcome:
    """Apply `method` to a copy of `original`; `fresh` builds an untrained model for `retrain`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method].run(copy.deepcopy(original), data, recipe, params, shots, seed, fresh)
