"""The study's gray-box attack model: a 13-64-64-1 MLP on output features (shared by `study` and `heldout`)."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..seeds import derive_seed
from ..params import Param, positive_int, rate
from .base import AttackerView, Outputs, features

N_FEATURES = 13
# The `attack` section of a grid's params: the study's 13-64-64-1 MLP (dropout 0.3, Adam lr 0.01, 1000
# full-batch epochs), shared by the `study` and `heldout` protocols, the members and non-members drawn for
# its training, and the study's flagging threshold (probability 0.5).
# The held-out attack: `fit_on: released` fits it on the model under evaluation (the attacker holds the
# released model), `original` on the original model (the first version's reading, kept for comparison).
# It flags at a fixed false-positive rate `flag_fpr` calibrated on P_attack non-members kept out of its
# training, and is fit with `n_seeds` attack seeds in one batched run: the row holds their mean and spread.
PARAMS = {"hidden": positive_int(64, 4096), "dropout": Param(0.3, 0.0, 1.0, open_high=True), "lr": rate(0.01),
          "epochs": positive_int(1000, 100_000), "n_members": positive_int(500), "n_nonmembers": positive_int(500),
          "threshold": Param(0.5, 0.0, 1.0), "fit_on": Param("released", choices=("released", "original")),
          "flag_fpr": Param(0.05, 0.0, 0.5, open_low=True), "n_seeds": positive_int(5, 64)}
# float32: features are probabilities and a loss; the attack needs no more precision. Its 1000 full-batch
# epochs were most of an attack stage's time, so `_train` runs them by hand: `benchmarks/bench_attack.py`
# measured 1.36 ms an epoch against 4.21 ms for the textbook loop (nn.Dropout's per-element bernoulli,
# autograd and the Adam wrapper), 3.1x, same model, initialisation, loss and Adam, one core, quiet.
DTYPE = torch.float32


class PaperMLP(nn.Module):
    """13-64-64-1 MLP, ReLU, dropout, sigmoid output."""

    def __init__(self, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, hidden, dtype=DTYPE), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden, dtype=DTYPE), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1, dtype=DTYPE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> np.ndarray:
        """Membership log-odds per sample: the output logit, in float64. It ranks like the probability, but
        the probability underflows to exactly 0 below a logit of -745, and on hqnn-l1 retrain cells the MLP
        extrapolates that far on every forget sample and P_eval 4 alike: all tied, held-out AUC exactly
        0.500 in 9 of the paper grid's 15 class:4 retrain cells."""
        self.eval()
        return self(x).double().numpy()


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Samples flagged as members: probability >= threshold, i.e. log-odds >= log(t / (1 - t))."""
    with np.errstate(divide="ignore"):
        return scores >= np.log(threshold) - np.log1p(-threshold)


def fit_mlp(members: tuple[torch.Tensor, torch.Tensor], nonmembers: tuple[torch.Tensor, torch.Tensor],
            params: dict[str, Any], seed: int, sort: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """Train on (logits, labels) of members and non-members, full batch with Adam.

    Returns the MLP's weights and its accuracy on its own training data."""
    fm, fn = features(*members, sort=sort).to(DTYPE), features(*nonmembers, sort=sort).to(DTYPE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = PaperMLP(params["hidden"], params["dropout"])
    x = torch.cat([fm, fn])
    y = torch.cat([torch.ones(len(fm)), torch.zeros(len(fn))]).to(DTYPE)
    _train(mlp, x, y, params, np.random.default_rng(seed))
    acc = float((flagged(mlp.scores(x), params["threshold"]) == y.numpy().astype(bool)).mean())
    return dict(mlp.state_dict()), acc


def _train(mlp: PaperMLP, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], rng: np.random.Generator) -> None:
    """Full-batch epochs of BCE-with-logits and Adam (torch's defaults), forward and backward by hand.

    The weights live in one flat buffer so that Adam is four in-place operations; dropout masks
    (inverted dropout, as nn.Dropout) come from `rng`."""
    params_ = list(mlp.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params_])
    grad, m, v = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
    w1, b1, w2, b2, w3, b3 = _views(flat, params_)
    g1, gb1, g2, gb2, g3, gb3 = _views(grad, params_)
    n, h, p = len(y), params["hidden"], params["dropout"]
    keep = np.float32(1 / (1 - p)) if p < 1 else np.float32(0)
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, params["lr"]
    for step in range(1, params["epochs"] + 1):
        masks = torch.from_numpy(np.multiply(rng.random((2, n, h), dtype=np.float32) >= p, keep, dtype=np.float32))
        d1 = torch.addmm(b1, x, w1.T).clamp_min_(0).mul_(masks[0])
        d2 = torch.addmm(b2, d1, w2.T).clamp_min_(0).mul_(masks[1])
        gz = torch.sigmoid(torch.addmm(b3, d2, w3.T)).sub_(y[:, None]).div_(n)  # d loss / d logit
        torch.mm(gz.T, d2, out=g3)
        torch.sum(gz, 0, out=gb3)
        # through dropout and ReLU: kept and positive units pass `keep` times the gradient (d > 0 exactly there)
        ga2 = (gz @ w3).mul_(d2.sign()).mul_(keep)
        torch.mm(ga2.T, d1, out=g2)
        torch.sum(ga2, 0, out=gb2)
        ga1 = (ga2 @ w2).mul_(d1.sign()).mul_(keep)
        torch.mm(ga1.T, x, out=g1)
        torch.sum(ga1, 0, out=gb1)
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        flat.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
    with torch.no_grad():
        for param, view in zip(params_, _views(flat, params_)):
            param.copy_(view)


def fit_mlps(members: tuple[torch.Tensor, torch.Tensor], nonmembers: tuple[torch.Tensor, torch.Tensor],
             params: dict[str, Any], seeds: list[int], sort: bool = False) -> list[PaperMLP]:
    """K MLPs, one per seed (its own initialisation and dropout masks), trained in one batched run on the
    same members and non-members: K separate fits cost about K times the per-step overhead, one run less."""
    fm, fn = features(*members, sort=sort).to(DTYPE), features(*nonmembers, sort=sort).to(DTYPE)
    mlps = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mlps.append(PaperMLP(params["hidden"], params["dropout"]))
    x = torch.cat([fm, fn])
    y = torch.cat([torch.ones(len(fm)), torch.zeros(len(fn))]).to(DTYPE)
    _train_many(mlps, x, y, params, [np.random.default_rng(s) for s in seeds])
    return mlps


def _train_many(mlps: list[PaperMLP], x: torch.Tensor, y: torch.Tensor, params: dict[str, Any],
                rngs: list[np.random.Generator]) -> None:
    """`_train` for K models at once: each weight is a [K, ...] slice of one flat buffer laid out weight by
    weight, so the layers are batched matrix products and Adam is still four in-place operations."""
    k, n, h, p = len(mlps), len(y), params["hidden"], params["dropout"]
    shapes = [t.shape for t in mlps[0].parameters()]
    flat = torch.cat([torch.stack([list(m.parameters())[j].detach() for m in mlps]).reshape(-1)
                      for j in range(len(shapes))])
    grad, m1, v = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
    w1, b1, w2, b2, w3, b3 = _stacked_views(flat, shapes, k)
    g1, gb1, g2, gb2, g3, gb3 = _stacked_views(grad, shapes, k)
    xk = x.expand(k, n, x.shape[1])
    keep = np.float32(1 / (1 - p)) if p < 1 else np.float32(0)
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, params["lr"]
    for step in range(1, params["epochs"] + 1):
        masks = torch.from_numpy(np.stack([np.multiply(r.random((2, n, h), dtype=np.float32) >= p, keep,
                                                       dtype=np.float32) for r in rngs]))
        d1 = torch.baddbmm(b1[:, None], xk, w1.transpose(1, 2)).clamp_min_(0).mul_(masks[:, 0])
        d2 = torch.baddbmm(b2[:, None], d1, w2.transpose(1, 2)).clamp_min_(0).mul_(masks[:, 1])
        gz = torch.sigmoid(torch.baddbmm(b3[:, None], d2, w3.transpose(1, 2))).sub_(y[None, :, None]).div_(n)
        torch.bmm(gz.transpose(1, 2), d2, out=g3)
        torch.sum(gz, 1, out=gb3)
        ga2 = torch.bmm(gz, w3).mul_(d2.sign()).mul_(keep)
        torch.bmm(ga2.transpose(1, 2), d1, out=g2)
        torch.sum(ga2, 1, out=gb2)
        ga1 = torch.bmm(ga2, w2).mul_(d1.sign()).mul_(keep)
        torch.bmm(ga1.transpose(1, 2), xk, out=g1)
        torch.sum(ga1, 1, out=gb1)
        m1.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        flat.addcdiv_(m1, denom, value=-lr / (1 - beta1**step))
    with torch.no_grad():
        for j, view in enumerate(_stacked_views(flat, shapes, k)):
            for i, mlp in enumerate(mlps):
                list(mlp.parameters())[j].copy_(view[i])


def _stacked_views(flat: torch.Tensor, shapes: list[torch.Size], k: int) -> list[torch.Tensor]:
    out, at = [], 0
    for shape in shapes:
        size = k * math.prod(shape)
        out.append(flat[at: at + size].view(k, *shape))
        at += size
    return out


def _views(flat: torch.Tensor, shapes_of: list[torch.Tensor]) -> list[torch.Tensor]:
    out, at = [], 0
    for t in shapes_of:
        out.append(flat[at: at + t.numel()].view(t.shape))
        at += t.numel()
    return out


def mlp_scores(state: dict[str, torch.Tensor], params: dict[str, Any], logits: torch.Tensor,
               labels: torch.Tensor, sort: bool = False) -> np.ndarray:
    mlp = PaperMLP(params["hidden"], params["dropout"])
    mlp.load_state_dict({k: v for k, v in state.items() if k.startswith("net.")})
    return mlp.scores(features(logits, labels, sort=sort).to(DTYPE))


def fit_attack(view: AttackerView, rows: dict[str, np.ndarray], member_role: str, nonmember_role: str,
               seed_tag: str, sort: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """fit_mlp on the original model's outputs at `rows`; the rows travel with the state, so that a test
    can check that none of them is ever scored."""
    members, nonmembers = rows[member_role], rows[nonmember_role]
    state, acc = fit_mlp(view.original.at(member_role, members), view.original.at(nonmember_role, nonmembers),
                         view.know.params["attack"], derive_seed(view.know.seed, seed_tag), sort)
    return state | {"members_rows": torch.from_numpy(members), "nonmembers_rows": torch.from_numpy(nonmembers)}, acc


def scorer(sort: bool) -> Callable[[dict[str, torch.Tensor], Outputs, dict[str, Any]], dict[str, np.ndarray]]:
    """The attack module's `score` for an MLP attack: every queried role."""
    def score(state: dict[str, torch.Tensor], target: Outputs, params: dict[str, Any]) -> dict[str, np.ndarray]:
        return {role: mlp_scores(state, params["attack"], target.logits[role], target.labels[role], sort)
                for role in target.rows}
    return score


def no_rows(know: Any) -> dict[str, np.ndarray]:
    return {}
