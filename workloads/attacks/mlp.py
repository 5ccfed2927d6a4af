"""The study's gray-box attack model: a 13-64-64-1 MLP on output features (shared by `study` and `heldout`)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..seeds import derive_seed
from .base import AttackerView, Outputs, features

N_FEATURES = 13
# float32 and fused Adam: its 1000 full-batch epochs were 87% of an attack stage's time in float64 (6.9 ms an
# epoch on one core, quiet); float32 with fused Adam takes about 3.4 ms
# (features are probabilities and a loss; the attack needs no more precision).
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
        """Membership probability per sample."""
        self.eval()
        return torch.sigmoid(self(x).double()).numpy()  # float64: float32 saturates at |logit| > 17


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
        opt = torch.optim.Adam(mlp.parameters(), lr=params["lr"], fused=True)
        mlp.train()
        for _ in range(params["epochs"]):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(mlp(x), y).backward()
            opt.step()
    acc = float(((mlp.scores(x) >= params["threshold"]) == y.numpy().astype(bool)).mean())
    return dict(mlp.state_dict()), acc


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
