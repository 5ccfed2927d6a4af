"""Membership-inference attacks behind one interface (docs/metrics.md).

Each attack is one module with NAME, SCORE_COLUMN (its per-example column, or None), NEEDS_REFERENCES,
PER_FORGET_SET (whether its fit depends on the forget set: the attack stage is split so that the others
are fitted once per original model and eval shots, for every forget set) and
  queries(know) / reference_queries(know)   rows of each data role it needs from the original / reference models
  fit(view) -> (state, info)                in the attack stage, on what the attacker may see
  target_rows(know)                         extra rows of the evaluated model it needs (beyond those scored)
  score(state, outputs, params)             membership scores of every queried row (higher: member)
  columns(members, nonmembers, params)      its cell columns from the scores of forget-set members and of
                                            held-out P_eval non-members
and, for everything else that reads the registry, LABEL, ORDER (report order), COLUMNS (its cell columns:
column -> (label, interval kind, count column)), ROC_PREFIX (the prefix of its ROC columns, or None) and,
optionally, SECTION and PARAMS (its own section of a grid's params, with defaults and ranges).
Adding an attack is one module plus one line in ATTACKS.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Iterable

import numpy as np
import torch

from ..params import Param
from ..registry import members
from . import heldout, lira, loss, mlp, rmia, study, ulira
from .base import AttackerView, Knowledge, Outputs

REQUIRED = ("NAME", "LABEL", "ORDER", "COLUMNS", "ROC_PREFIX", "SCORE_COLUMN", "NEEDS_REFERENCES", "PER_FORGET_SET",
            "queries", "reference_queries", "fit", "target_rows", "score", "columns")
ATTACKS: dict[str, ModuleType] = members(REQUIRED, study, heldout, loss, rmia, lira, ulira)

# `references`: k reference models for the attacks that need them (0: off; pairs, each pair splits its pool in
# complementary halves), trained with the model's recipe for `epoch_fraction` of its epochs (at least 1).
# `mode`: offline (the pool is P_attack, every scored sample OUT of every reference: one reference's cost buys
# an attack on any sample) or online (the pool is the scored samples, each IN half of the references: the
# Carlini et al. and Zarifzadeh et al. setting, stronger per reference; docs/metrics.md). Offline stays the
# default: its references serve every target model of a seed, online ones train on 1.6x the samples.
REFERENCE_MODES = ("offline", "online")
REFERENCE_PARAMS = {"k": Param(0, 0, 256), "epoch_fraction": Param(1.0, 0.0, 1.0, open_low=True),
                    "mode": Param("offline", choices=REFERENCE_MODES)}
# Params sections of the attacks: the MLP's (shared by study and heldout), the references', and each
# attack's own.
SECTIONS: dict[str, dict[str, Param]] = {
    "attack": mlp.PARAMS, "references": REFERENCE_PARAMS,
    **{m.SECTION: m.PARAMS for m in ATTACKS.values() if hasattr(m, "SECTION")},
}

__all__ = ["ATTACKS", "SCOPES", "SECTIONS", "AttackerView", "Knowledge", "Outputs", "active", "fitted_on_target",
           "in_attack_stage", "merge_rows", "pack", "unpack"]


SCOPES = ("shared", "forget")  # attack stages: the attacks fitted once for all forget sets, and the others


def active(params: dict[str, dict[str, Any]], scope: str | None = None) -> list[ModuleType]:
    """The attacks a cell runs: all of them, those needing reference models only when there are some.
    With a scope, those its attack stage fits: the shared ones (PER_FORGET_SET false) or the per-forget-set
    ones among `in_attack_stage`."""
    k, shadows = params["references"]["k"], params["ulira"]["k"]
    on = [a for a in ATTACKS.values() if (k > 0 or not a.NEEDS_REFERENCES)
          and (shadows > 0 or not getattr(a, "NEEDS_SHADOWS", False))]
    if scope is None:
        return on
    return [a for a in in_attack_stage(params) if a.PER_FORGET_SET == (scope == "forget")]


def in_attack_stage(params: dict[str, dict[str, Any]]) -> list[ModuleType]:
    """The active attacks that an attack stage fits: not those fit on the evaluated model itself
    (`fitted_on_target`), nor those fit from shadow models (NEEDS_SHADOWS: their own stages)."""
    later = set(fitted_on_target(params))
    return [a for a in active(params) if a not in later and not getattr(a, "NEEDS_SHADOWS", False)]


def fitted_on_target(params: dict[str, dict[str, Any]]) -> list[ModuleType]:
    """Attacks fit in the evaluate stage on the model under evaluation (`attack.fit_on: released`)."""
    if params["attack"]["fit_on"] != "released":
        return []
    return [a for a in active(params) if getattr(a, "FITS_ON_TARGET", False)]


def merge_rows(*wants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Union of sorted rows per role."""
    out: dict[str, np.ndarray] = {}
    for w in wants:
        for role, rows in w.items():
            out[role] = np.union1d(out.get(role, np.zeros(0, np.int64)), rows).astype(np.int64)
    return out


def pack(states: Iterable[tuple[str, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """One flat state dict for the attack stage's artifact: keys prefixed by the attack's name."""
    return {f"{name}.{k}": v for name, s in states for k, v in s.items()}


def unpack(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
