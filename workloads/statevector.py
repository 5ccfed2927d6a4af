"""Batched torch statevector executor for the circuits of `circuits.py`, with autograd.

States are (rows, 256) complex tensors indexed like qiskit (bit q of the index is qubit q).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .circuits import N_QUBITS, gray_signs

DIM = 2**N_QUBITS
COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}


@lru_cache(maxsize=None)
def ring_permutation() -> torch.Tensor:
    """Gather index g of the CNOT ring: (ring |psi>)[j] = psi[g[j]]."""
    b = torch.arange(DIM)
    f = b.clone()
    for q in range(N_QUBITS):
        t = (q + 1) % N_QUBITS
        ctrl = (f >> q) & 1
        f = f ^ (ctrl << t)
    g = torch.empty_like(f)
    g[f] = b  # out[f[b]] = psi[b]  <=>  out[j] = psi[g[j]]
    return g


@lru_cache(maxsize=None)
def z_signs(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(256, 8) matrix of 1 - 2*bit_j(b), so <Z> = probs @ z_signs."""
    b = torch.arange(DIM).unsqueeze(1)
    return (1 - 2 * ((b >> torch.arange(N_QUBITS)) & 1)).to(dtype)


def u3_matrices(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) angles -> (..., 2, 2) complex U3(theta, phi, lambda), as qiskit defines it."""
    theta, phi, lam = w[..., 0], w[..., 1], w[..., 2]
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    cdt = COMPLEX[w.dtype]
    e_phi, e_lam = torch.exp(1j * phi.to(cdt)), torch.exp(1j * lam.to(cdt))
    row0 = torch.stack([c.to(cdt), -e_lam * s], dim=-1)
    row1 = torch.stack([e_phi * s, e_phi * e_lam * c], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def layer_unitary(w_layer: torch.Tensor) -> torch.Tensor:
    """(8, 3) weights of one layer -> (256, 256): U3 on every qubit, then the CNOT ring."""
    return u3_kron(u3_matrices(w_layer))[ring_permutation()]


def u3_kron(gates: torch.Tensor) -> torch.Tensor:
    """(8, 2, 2) single-qubit gates -> their tensor product, qubit 7 most significant."""
    hi, lo = half_krons(gates)
    return torch.kron(hi, lo)


def half_krons(gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 tensor products of qubits 7..4 (high) and 3..0 (low)."""
    hi, lo = gates[7], gates[3]
    for q in (6, 5, 4):
        hi = torch.kron(hi, gates[q])
    for q in (2, 1, 0):
        lo = torch.kron(lo, gates[q])
    return hi, lo


def ring(states: torch.Tensor) -> torch.Tensor:
    """Apply the CNOT ring to states (..., 256)."""
    return states[..., ring_permutation()]


def apply_layers(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Apply the ansatz (weights (L, 8, 3)) to states (rows, 256).

    Large batches first build the whole 256x256 unitary. Small ones (training) apply each layer
    as hi (x) lo on the (16, 16)-reshaped state, which skips building the 256x256 Kronecker
    product and is about 3x faster with autograd.
    """
    if states.shape[0] > DIM:
        return states @ product([layer_unitary(w) for w in weights]).T
    rows = states.shape[0]
    perm = ring_permutation()
    for w in weights:
        hi, lo = half_krons(u3_matrices(w))
        states = (hi @ states.reshape(rows, 16, 16) @ lo.T).reshape(rows, DIM)[:, perm]
    return states


def product(units: list[torch.Tensor]) -> torch.Tensor:
    """U_L ... U_1 for layer unitaries listed first to last (identity when empty)."""
    if not units:
        return torch.eye(DIM, dtype=COMPLEX[torch.float64])
    total = units[0]
    for u in units[1:]:
        total = u @ total
    return total


def amplitude_states(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors (rows, 256) -> complex states."""
    return x.to(COMPLEX[x.dtype])


def angle_states(x: torch.Tensor) -> torch.Tensor:
    """Angles (rows, 8) -> product states of RY(x_q)|0> on each qubit."""
    c, s = torch.cos(x / 2), torch.sin(x / 2)
    single = torch.stack([c, s], dim=-1)  # (rows, 8, 2)
    state = single[:, N_QUBITS - 1]
    for q in range(N_QUBITS - 2, -1, -1):
        state = (state[:, :, None] * single[:, q, None, :]).reshape(len(x), -1)
    return state.to(COMPLEX[x.dtype])


def tree_alpha(x: torch.Tensor, eps: float = 1e-24) -> torch.Tensor:
    """Differentiable tree angles alpha(x) of unit vectors (rows, 256) -> (rows, 255)."""
    out = []
    for k in range(N_QUBITS):
        blocks = x.reshape(len(x), 2**k, 2, -1)
        if k < N_QUBITS - 1:
            left = torch.sqrt((blocks[:, :, 0] ** 2).sum(-1) + eps)
            right = torch.sqrt((blocks[:, :, 1] ** 2).sum(-1) + eps)
        else:
            left, right = blocks[:, :, 0, 0], blocks[:, :, 1, 0]
        out.append(2.0 * torch.atan2(right, left))
    return torch.cat(out, dim=1)


def tree_states(alpha: torch.Tensor) -> torch.Tensor:
    """Tree angles (rows, 255) -> the real amplitude vectors (rows, 256) they prepare."""
    amp = torch.ones(len(alpha), 1, dtype=alpha.dtype)
    offset = 0
    for k in range(N_QUBITS):
        a = alpha[:, offset : offset + 2**k] / 2
        amp = torch.stack([amp * torch.cos(a), amp * torch.sin(a)], dim=-1).reshape(len(alpha), -1)
        offset += 2**k
    return amp


@lru_cache(maxsize=None)
def gray_sign_blocks(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(gray_signs(k), dtype=dtype) for k in range(N_QUBITS))


def expectations(states: torch.Tensor) -> torch.Tensor:
    """Exact <Z_j> for j = 0..7: (rows, 256) -> (rows, 8)."""
    probs = probabilities(states)
    return probs @ z_signs(probs.dtype)


def probabilities(states: torch.Tensor) -> torch.Tensor:
    return states.real**2 + states.imag**2
