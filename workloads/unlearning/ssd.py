"""`ssd`: selective synaptic dampening (Foster et al. 2023), no retraining.

Every parameter with I_f > alpha * I_D is multiplied by beta = min(lam * I_D / I_f, 1). Rotation
angles start uniform on (0, 2 pi) and are periodic, so 0 is no natural target: `dampen_quantum:
displacement` dampens what training moved each angle, theta0 + beta * wrap(theta - theta0) with theta0
the original model's initial angles; `dampen_quantum: false` (the default) leaves the angles alone (and
computes no importance for them, which saves their parameter-shift circuits).
"""

from __future__ import annotations

import math
import time

import torch

from ..models import shots_mode
from ..models.training import Cost
from ..params import Param, positive_int
from .base import Outcome, Workload

NAME = "ssd"
LABEL = "SSD"
ORDER = 4
SUMMARY = "selective synaptic dampening of parameters important to the forget set"
TOUCHES = ("front end", "head")  # and the angles with dampen_quantum: displacement
# alpha 30, lam 1 (benchmarks/tune.py, hqnn-l1 class:4, seeds 100-102; benchmarks/tuning/hqnn-l1-class4.json):
# forget accuracy 0.000, validation 0.927 against the original's 0.923 (gap 0.000); Foster et al.'s alpha 10
# dampened more and left validation at 0.883 (gap 0.040), alpha 1 at 0.774. lam did not matter at alpha 30;
# ties go to Foster et al.'s lam 1. The qnn family keeps alpha 10 (qnn-l10: gap 0.000 there, alpha 30 0.015).
# dampen_quantum false by measurement: on hqnn-l1, `wrap` dampened 3 of the 24 angles (12.5%) and
# retained-class test accuracy fell 0.923 -> 0.12; `false` dampened 1.1% of the classical weights, forget
# accuracy 0.0, retained test 0.928, at 0.56 M device circuits (4% of retrain). qnn-l10 seed 0 agrees:
# `wrap` dampened 17% of the angles and retained test fell 0.647 -> 0.088; `false` dampened 12% of the
# head, forget accuracy 0.0, retained test 0.599. `wrap` pulled wrapped angles toward 0, an arbitrary target
# (the initial angles are uniform on (0, 2 pi), and 0 alone is not the identity for U3): it is replaced by
# `displacement`, which dampens the learned displacement from the initial angles, theta0 + beta wrap(theta - theta0).
PARAMS = {"alpha": Param(30.0, 0.0, 1e6, open_low=True), "lam": Param(1.0, 0.0, 1e6, open_low=True),
          "batch_size": positive_int(16, 4096), "dampen_quantum": Param(False, choices=(False, "displacement"))}
FAMILY_DEFAULTS = {"qnn": {"alpha": 10.0}}


def passes(w: Workload) -> float:
    return w.n_train + w.n_forget  # one pass of importances over the data and one over the forget set
from .importance import importances, is_quantum, selection, trainable


def wrap_angles(theta: torch.Tensor) -> torch.Tensor:
    """The same gates with every angle in (-pi, pi] (U3 is 2pi-periodic up to a global phase)."""
    return math.pi - torch.remainder(math.pi - theta, 2 * math.pi)


def run(model, data, recipe, params, shots, seed, fresh) -> Outcome:
    start = time.perf_counter()
    quantum = params["dampen_quantum"] == "displacement"
    theta0 = fresh().quantum.weight.detach() if quantum else None  # the original model's initial angles
    wanted = (lambda n: True) if quantum else (lambda n: not is_quantum(n))
    with shots_mode(model, shots, torch.Generator().manual_seed(seed + 5)) as log, trainable(model, wanted):
        i_d, i_f = importances(model, torch.cat([data.x_retain, data.x_forget]), torch.cat([data.y_retain, data.y_forget]),
                               data.x_forget, data.y_forget, params["batch_size"], seed + 6)
    counts = {"quantum": [0, 0], "classical": [0, 0]}  # dampened, total
    with torch.no_grad():
        for (name, p), d, f in zip(model.named_parameters(), i_d, i_f):
            kind = "quantum" if is_quantum(name) else "classical"
            counts[kind][1] += p.numel()
            if kind == "quantum" and not quantum:
                continue
            mask, beta = selection(d, f, params["alpha"], params["lam"])
            if kind == "quantum":  # dampen what training moved, never the arbitrary initial angle itself
                moved = wrap_angles(p - theta0)
                p.copy_(torch.where(mask, theta0 + beta * moved, p))
            else:
                p[mask] *= beta[mask]
            counts[kind][0] += int(mask.sum())
    frac = lambda k: counts[k][0] / counts[k][1] if counts[k][1] else float("nan")  # noqa: E731
    info = {"ssd_dampened_fraction": sum(c[0] for c in counts.values()) / sum(c[1] for c in counts.values()),
            "ssd_dampened_fraction_quantum": frac("quantum"), "ssd_dampened_fraction_classical": frac("classical")}
    return Outcome(model, Cost.of(time.perf_counter() - start, log), info)
