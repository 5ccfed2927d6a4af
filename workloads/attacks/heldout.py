"""`heldout`: the study's MLP trained on what an attacker may know, scored only on samples it never saw.

Members are drawn from the retain set, non-members from P_attack, of the retained classes only, and the
MLP reads the output probabilities sorted (class-agnostic, as in ML-Leaks). With the forgotten class among
the non-members alone, the MLP learned "a 4 is a non-member" (AUC 0.41 on qnn-l10, class:4, `none`, seeds
0-2, where the loss attack's was 0.60); with the classes matched but probabilities by class, it had never
seen a confident 4 and scored every 4 as a certain non-member (AUC 0.500 on hqnn-l1, all scores 0).
It is scored on the forget set against held-out P_eval non-members, so its AUC, TPR and flag rates measure
leakage, not memorised features.

The attacker holds the released model: by default (`attack.fit_on: released`) the MLPs are fit on the
model under evaluation (the unlearned one in an unlearning cell), and flag at a false-positive rate fixed
on P_attack non-members they never trained on (`flag_fpr`), so that recall, flag rate and advantage mean
the same on every model. `fit_on: original` fits them once on the original model (the first reading).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import metrics
from ..seeds import derive_seed
from . import mlp
from .base import AttackerView, Knowledge, Outputs, draw
from .mlp import no_rows

NAME = "heldout"
LABEL = "paper MLP attack"
ORDER = 1
COLUMNS = {"mia_recall_heldout": ("held-out recall (forget set)", "wilson", "n_members"),
           "mia_advantage": ("held-out advantage", "row", None),
           "mia_auc": ("attack AUC", "auc", None),
           "mia_tpr_at_1pct_fpr": ("TPR@1%FPR", "wilson", "n_members"),
           "mia_tpr_at_01pct_fpr": ("TPR@0.1%FPR", "wilson", "n_members"),
           "mia_nonmember_flag_rate": ("flag rate, unseen non-members", "wilson", "n_nonmembers"),
           "mia_fpr_floor": ("FPR floor", "none", None)}
ROC_PREFIX = "mia"
SCORE_COLUMN = "attack_score"
NEEDS_REFERENCES = False
PER_FORGET_SET = True  # its members come from the retain set: one fit per forget set


FITS_ON_TARGET = True  # with `fit_on: released` it is fit in the evaluate stage, on the evaluated model


def queries(know: Knowledge) -> dict[str, np.ndarray]:
    members, nonmembers, calibration = _roles(know)
    return {"train": members, "attack": np.union1d(nonmembers, calibration)}


def _roles(know: Knowledge) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training members (retain set) and non-members (P_attack, retained classes), and the calibration
    non-members: the rest of P_attack of the class the scored non-members come from (the forgotten class,
    or any class for random forgetting), never trained on."""
    p = know.params["attack"]
    members = know.retain[draw(len(know.retain), p["n_members"], derive_seed(know.seed, "heldout-members"))]
    everyone = np.arange(know.sizes["attack"])
    if know.forget_class is None:
        pool = same_class = everyone
    else:
        pool, same_class = (np.flatnonzero(f(know.attack_labels, know.forget_class)) for f in (np.not_equal, np.equal))
    nonmembers = pool[draw(len(pool), p["n_nonmembers"], derive_seed(know.seed, "heldout-nonmembers"))]
    return np.sort(members), nonmembers, np.setdiff1d(same_class, nonmembers)


reference_queries = target_rows = no_rows


def fit(view: AttackerView) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """`n_seeds` MLPs on the attacked model's outputs (view.original: the released model by default), each
    with its flagging threshold at `flag_fpr` on the calibration non-members."""
    p = view.know.params["attack"]
    members, nonmembers, calibration = _roles(view.know)
    seeds = [derive_seed(view.know.seed, "heldout-fit", i) for i in range(p["n_seeds"])]
    mlps = mlp.fit_mlps(view.original.at("train", members), view.original.at("attack", nonmembers), p, seeds,
                        sort=True)
    cal = view.original.at("attack", calibration)
    cuts = [_threshold(mlp.mlp_scores(dict(m.state_dict()), p, *cal, sort=True), p["flag_fpr"]) for m in mlps]
    state = {f"s{i}.{k}": v for i, m in enumerate(mlps) for k, v in m.state_dict().items()}
    state |= {"thresholds": torch.tensor([t for t, _ in cuts], dtype=torch.float64),
              "tie_flag": torch.tensor([q for _, q in cuts], dtype=torch.float64),
              "members_rows": torch.from_numpy(members), "nonmembers_rows": torch.from_numpy(nonmembers),
              "calibration_rows": torch.from_numpy(calibration)}
    return state, {"heldout_calibration_n": float(len(calibration))}


def _threshold(scores: np.ndarray, fpr: float) -> tuple[float, float]:
    """(t, q): flag a score above t, and one equal to t with probability q, so that exactly `fpr` of
    `scores` is flagged in expectation. A randomised cut, because confident outputs saturate the MLP's
    features: on the smoke grid's original model 30 of 178 P_eval 4s shared the top score, and a strict
    cut flagged nothing at all."""
    if len(scores) == 0:
        return math.inf, 0.0
    s = np.sort(scores)[::-1]
    t = s[min(int(math.floor(fpr * len(s))), len(s) - 1)]
    above, tied = int((s > t).sum()), int((s == t).sum())
    return float(t), min(1.0, max(0.0, (fpr * len(s) - above) / tied))


def flags(scores: np.ndarray, t: float, q: float) -> np.ndarray:
    """Each sample's probability of being flagged at the randomised cut (t, q)."""
    return (scores > t) + q * (scores == t)


def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per role, [n, n_seeds] membership log-odds (one column per attack seed)."""
    p = params["attack"]
    n = len(state["thresholds"])
    per = [{k[len(f"s{i}."):]: v for k, v in state.items() if k.startswith(f"s{i}.")} for i in range(n)]
    return {role: np.stack([mlp.mlp_scores(w, p, target.logits[role], target.labels[role], sort=True) for w in per],
                           axis=1) for role in target.rows}


def columns(members: np.ndarray, nonmembers: np.ndarray, params: dict[str, Any],
            state: dict[str, torch.Tensor]) -> dict[str, float]:
    """Recall, flag rate and advantage at the calibrated cuts (expected flags): means over the attack seeds.
    AUC and TPRs: of the bagged score (the seeds' mean per sample, the examples' `mia_score`), so that the
    report's ROC, read from the examples, gives the stored values. Beside them the seeds' standard deviation
    of AUC and advantage; the advantage's interval widens Newcombe's by that spread."""
    thr, tie = state["thresholds"].numpy(), state["tie_flag"].numpy()
    per = []
    for i, (t, q) in enumerate(zip(thr, tie)):
        m, n = flags(members[:, i], t, q), flags(nonmembers[:, i], t, q)
        adv, lo, hi = metrics.rate_difference(m, n)
        per.append({"mia_recall_heldout": metrics.rate(m)[0], "mia_nonmember_flag_rate": metrics.rate(n)[0],
                    "mia_advantage": adv, "_lo": adv - lo, "_hi": hi - adv,
                    "mia_auc": metrics.auc(members[:, i], nonmembers[:, i])})
    out = {k: _mean([r[k] for r in per]) for k in per[0] if not k.startswith("_") and k != "mia_auc"}
    out.update(metrics.roc_columns("mia", members.mean(axis=1), nonmembers.mean(axis=1)))
    sd = {k: _sd([r[k] for r in per]) for k in ("mia_auc", "mia_advantage")}
    z = 1.959963984540054
    lo = math.hypot(_mean([r["_lo"] for r in per]), z * sd["mia_advantage"])
    hi = math.hypot(_mean([r["_hi"] for r in per]), z * sd["mia_advantage"])
    return {**out, "mia_advantage_lo": out["mia_advantage"] - lo, "mia_advantage_hi": out["mia_advantage"] + hi,
            "mia_auc_attack_sd": sd["mia_auc"], "mia_advantage_attack_sd": sd["mia_advantage"],
            "mia_attack_seeds": len(thr)}


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else math.nan


def _sd(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan
