"""Finite-shot estimates: one computational-basis measurement of S shots estimates every <Z_j>."""

from __future__ import annotations

import numpy as np
import torch

from .statevector import DIM, z_signs


def sample_counts(probs: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Multinomial counts (rows, 256) of `shots` draws from each row of `probs`.

    numpy's vectorised multinomial is about 5x faster than torch's samplers here; its stream is
    seeded from `generator`, so the draw stays a pure function of the cell's seed.
    """
    p = probs.detach().to(torch.float64).clamp_min(0.0).numpy()
    p = p / p.sum(axis=1, keepdims=True)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    counts = np.random.default_rng(seed).multinomial(shots, p)
    return torch.from_numpy(counts.astype(np.float64))


def sample_expectations(probs: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """Shot estimates of <Z_j>, j = 0..7, for each row of `probs` (..., 256) -> (..., 8)."""
    lead = probs.shape[:-1]
    counts = sample_counts(probs.reshape(-1, DIM), shots, generator)
    z = counts @ z_signs(torch.float64) / shots
    return z.to(probs.dtype).reshape(*lead, -1)
