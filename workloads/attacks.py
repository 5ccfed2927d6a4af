"""Membership-inference attacks: the paper's 13-feature MLP and a loss-threshold attack."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

N_FEATURES = 13


def attack_features(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample: 10 softmax probabilities, max probability, correctness bit, cross-entropy (13)."""
    probs = F.softmax(logits, dim=1)
    loss = F.cross_entropy(logits, labels, reduction="none")
    correct = (logits.argmax(1) == labels).to(probs.dtype)
    return torch.cat([probs, probs.max(1).values[:, None], correct[:, None], loss[:, None]], dim=1)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


class PaperMLP(nn.Module):
    """13-64-64-1 MLP, ReLU, dropout, sigmoid output (the study's gray-box attack)."""

    def __init__(self, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, hidden, dtype=torch.float64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden, dtype=torch.float64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1, dtype=torch.float64),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)

    @torch.no_grad()
    def scores(self, features: torch.Tensor) -> np.ndarray:
        """Membership probability per sample."""
        self.eval()
        return torch.sigmoid(self(features)).numpy()


def fit_paper_attack(
    member_features: torch.Tensor, nonmember_features: torch.Tensor, params: dict[str, Any], seed: int
) -> tuple[PaperMLP, float]:
    """Train the MLP full-batch with Adam; returns it and its accuracy on its own training data."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = PaperMLP(params["hidden"], params["dropout"])
        x = torch.cat([member_features, nonmember_features])
        y = torch.cat([torch.ones(len(member_features)), torch.zeros(len(nonmember_features))]).double()
        opt = torch.optim.Adam(mlp.parameters(), lr=params["lr"])
        mlp.train()
        for _ in range(params["epochs"]):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(mlp(x), y).backward()
            opt.step()
    acc = float(((mlp.scores(x) >= params["threshold"]) == y.numpy().astype(bool)).mean())
    return mlp, acc


def load_paper_attack(state: dict[str, torch.Tensor], params: dict[str, Any]) -> PaperMLP:
    mlp = PaperMLP(params["hidden"], params["dropout"])
    mlp.load_state_dict({k: v for k, v in state.items() if k.startswith("net.")})
    return mlp
