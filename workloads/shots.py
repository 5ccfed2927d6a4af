"""Finite-shot estimates: one computational-basis measurement of S shots estimates every <Z_j>."""

from __future__ import annotations

import torch

from .statevector import DIM, z_signs


def sample_counts(probs: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Multinomial counts (rows, 256) of `shots` draws from each row of `probs`.

    Drawn exactly as a chain of conditional binomials down the qubit tree, which is several
    times faster than per-shot sampling and costs the same for any S.
    """
    rows = probs.shape[0]
    counts = torch.full((rows, 1), float(shots), dtype=torch.float64)
    p = probs.detach().to(torch.float64).clamp_min(0.0)
    level = 1
    while level < DIM:
        blocks = p.reshape(rows, level, 2, -1).sum(-1)
        parent = blocks.sum(-1)
        q = torch.where(parent > 0, blocks[..., 0] / parent.clamp_min(1e-300), 0.0).clamp(0.0, 1.0)
        left = torch.binomial(counts, q, generator=generator)
        counts = torch.stack([left, counts - left], dim=-1).reshape(rows, -1)
        level *= 2
    return counts


def sample_expectations(probs: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Shot estimates of <Z_j>, j = 0..7, for each row of `probs` (..., 256) -> (..., 8)."""
    lead = probs.shape[:-1]
    counts = sample_counts(probs.reshape(-1, DIM), shots, generator)
    z = counts @ z_signs(torch.float64) / shots
    return z.to(probs.dtype).reshape(*lead, -1)
