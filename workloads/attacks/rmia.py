"""`rmia`: Robust MIA (Zarifzadeh et al., ICML 2024, "Low-Cost High-Power Membership Inference Attacks"),
offline, with the reference models trained on halves of P_attack.

For a target sample x: ratio(x) = p(x|theta) / p(x), where p(.|theta) is the target model's probability of
the true label and p(x) its average over reference models. Every target sample (training set, P_eval) is
OUT for every reference, so p(x) uses the paper's offline correction p(x) = 1/2((1+a) p_OUT(x) + (1-a)).
The score of x is the fraction of population samples z (drawn from P_attack) with ratio(x)/ratio(z) >= gamma;
each z is OUT for the half of the references that did not train on it, and p(z) uses those.

Online (`references.mode: online`), each target sample is IN exactly half of the references, and p(x) is the
paper's online estimate: the mean over IN and OUT references, (p_IN(x) + p_OUT(x)) / 2, with no a (ML Privacy
Meter's `run_rmia(online=True)`). The population samples z stay out of every online reference's pool, so p(z)
is their mean over all references, as there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import metrics
from ..params import Param, positive_int
from ..seeds import derive_seed
from .base import AttackerView, Knowledge, Outputs, draw, roc_report_columns, true_label_prob

NAME = "rmia"
LABEL = "RMIA"
ORDER = 3
COLUMNS = roc_report_columns("rmia", "RMIA")
ROC_PREFIX = "rmia"
# The `rmia` section: the offline correction a ("auto": searched on the references as ML Privacy Meter does,
# attacking one reference with the others; a fixed 0.3, its default, left RMIA's AUC at 0.569 on the smoke
# grid's original model against the loss attack's 0.644), gamma, and how many P_attack samples z each target
# sample is compared with (1000: ties below 0.1% of the scale).
SECTION = "rmia"
PARAMS = {"offline_a": Param("auto", 0.0, 1.0, also=("auto",), kind=float),
          "gamma": Param(1.0, 0.0, 1e6, open_low=True), "n_population": positive_int(1000)}
A_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)
SCORE_COLUMN = "rmia_score"
NEEDS_REFERENCES = True
PER_FORGET_SET = False  # fitted once per original model and eval shots, shared by every forget set
TARGETS = ("train", "eval")


def _z_rows(know: Knowledge) -> np.ndarray:
    return draw(know.sizes["attack"], know.params["rmia"]["n_population"], derive_seed(know.seed, "rmia-population"))


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {}


def reference_queries(know: Knowledge) -> dict[str, np.ndarray]:
    return {**{r: np.arange(know.sizes[r]) for r in TARGETS}, "attack": _z_rows(know)}


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    know, refs = view.know, view.references
    online = know.params["references"]["mode"] == "online"
    state = {}
    for role in TARGETS:  # offline: every x is OUT of every reference; online: IN exactly half of them
        rows = np.arange(know.sizes[role])
        state[f"p_out_{role}"] = np.mean([true_label_prob(*r.at(role, rows)) for r in refs], axis=0)
    z = _z_rows(know)
    p = np.stack([true_label_prob(*r.at("attack", z)) for r in refs])
    out = np.stack([~np.isin(z, m.get("attack", ())) for m in view.reference_members])
    if not out.any(axis=0).all():
        raise ValueError("rmia: a population sample is IN for every reference model; references must come in "
                         "complementary pairs")
    state["p_out_z"] = (p * out).sum(0) / out.sum(0)
    a = know.params["rmia"]["offline_a"]
    # online: p(x) above is already (p_IN + p_OUT) / 2, and a = 1 makes the offline correction the identity
    state["offline_a"] = 1.0 if online else _search_a(p, out) if a == "auto" else a
    state["online"] = float(online)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
    state["z_rows"] = torch.from_numpy(z.astype(np.int64))
    return state, {"rmia_offline_a": _offline_a(state)}


def _offline_a(state: dict[str, torch.Tensor]) -> float:
    """The a the offline correction used; NaN online, where there is none."""
    return math.nan if float(state.get("online", 0.0)) else float(state["offline_a"])


def _search_a(p: np.ndarray, out: np.ndarray) -> float:
    """The offline a whose RMIA best separates reference 0's members from its non-members among the
    population samples, with the other references as references (p: [refs, z] true-label probabilities,
    out: [refs, z] whether each reference did not train on each z). Ties go to the smaller a."""
    rest_p, rest_out = p[1:], out[1:]
    has_out = rest_out.any(axis=0)
    p_out = np.where(has_out, (rest_p * rest_out).sum(0) / np.maximum(rest_out.sum(0), 1), np.nan)
    keep = has_out
    target, p_out, member = p[0][keep], p_out[keep], ~out[0][keep]
    if member.all() or not member.any():
        return 0.3
    best, best_auc = 0.3, -1.0
    for a in A_GRID:
        r = _ratio(target, p_out, a)
        score = np.searchsorted(np.sort(r), r, side="right") / len(r)
        auc = metrics.auc(score[member], score[~member])
        if auc > best_auc + 1e-12:
            best, best_auc = float(a), auc
    return best


def _ratio(p_target: np.ndarray, p_out: np.ndarray, a: float) -> np.ndarray:
    """p(x|theta) / p(x), with the paper's offline correction p(x) = 1/2((1+a) p_OUT(x) + (1-a))."""
    return p_target / (0.5 * ((1 + a) * p_out + (1 - a)))


def target_rows(know: Knowledge) -> dict[str, np.ndarray]:
    return {"attack": _z_rows(know)}


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    a, gamma = float(state["offline_a"]), params["rmia"]["gamma"]
    z = state["z_rows"].numpy()
    ratio_z = np.sort(_ratio(true_label_prob(*target.at("attack", z)), state["p_out_z"].numpy(), a))
    out = {}
    for role, rows in target.rows.items():
        if role not in TARGETS:
            out[role] = np.full(len(rows), np.nan)
            continue
        rx = _ratio(true_label_prob(target.logits[role], target.labels[role]), state[f"p_out_{role}"].numpy()[rows], a)
        # ratio(x)/ratio(z) >= gamma  <=>  ratio(z) <= ratio(x)/gamma
        out[role] = np.searchsorted(ratio_z, rx / gamma, side="right") / len(ratio_z)
    return out


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {**metrics.roc_columns("rmia", members, nonmembers), "rmia_offline_a": _offline_a(state),
            "references_mode": params["references"]["mode"]}
