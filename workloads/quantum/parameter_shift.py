"""Shot-based gradients by the parameter-shift rule, as a device would produce them.

Every shifted circuit is estimated with S shots; all shifted circuits of a batch go through one
batched call. Weights are U3 angles and inputs are RY angles (the Gray-code angles of the
amplitude tree, or the angle encoding), so the two-term rule with shifts of +-pi/2 is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .statevector import (
    COMPLEX,
    DIM,
    angle_states,
    apply_layers,
    gray_sign_blocks,
    layer_unitary,
    probabilities,
    product,
    ring,
    tree_states,
    u3_kron,
    u3_matrices,
    z_signs,
)
from .circuits import N_QUBITS
from .shots import sample_expectations

SHIFT = math.pi / 2


@dataclass
class ExecutionLog:
    """Circuits executed and shots spent; `device` also counts the parameter-shift circuits that a
    device would run for gradients the simulator took by autograd (equal to `circuits` at finite shots)."""

    circuits: int = 0
    shots: int = 0
    device: int = 0

    def add(self, circuits: int, shots: int | None) -> None:
        self.circuits += int(circuits)
        self.shots += int(circuits) * int(shots or 0)
        self.device += int(circuits)

    def add_device_only(self, circuits: int) -> None:
        self.device += int(circuits)


def shift_circuits(rows: int, n_weights: int, encoding: str, weight_grad: bool, input_grad: bool) -> int:
    """Parameter-shift circuits of one backward pass over `rows` samples, as `ShotExpectation` runs them."""
    per_row = (2 * n_weights if weight_grad else 0) + (2 * (255 if encoding == "amplitude" else 8) if input_grad else 0)
    return rows * per_row


def encode(encoding: str, enc: torch.Tensor) -> torch.Tensor:
    """Encoding parameters -> states: tree angles alpha (amplitude) or RY angles (angle)."""
    if encoding == "amplitude":
        return tree_states(enc).to(COMPLEX[enc.dtype])
    return angle_states(enc)


def measure(probs: torch.Tensor, shots: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """<Z_j> of probability rows, exact when shots is None."""
    if shots is None:
        return probs @ z_signs(probs.dtype)
    return sample_expectations(probs, shots, generator)


def weight_shift_states(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Final states of every +-pi/2 weight shift: (L, 8, 3, 2, rows, 256)."""
    n_layers, rows = weights.shape[0], states.shape[0]
    gates = u3_matrices(weights)
    units = [layer_unitary(w) for w in weights]
    shift = torch.zeros(3, 2, 3, dtype=weights.dtype)
    for k in range(3):
        shift[k, 0, k], shift[k, 1, k] = SHIFT, -SHIFT
    # g' g^dagger turns the already-applied gate into the shifted one.
    delta = u3_matrices(weights[:, :, None, None, :] + shift) @ gates[:, :, None, None].mH
    out, psi = [], states
    for layer in range(n_layers):
        phi = psi @ u3_kron(gates[layer]).T
        suffix = product(units[layer + 1 :]) if layer + 1 < n_layers else None
        for q in range(N_QUBITS):
            v = phi.reshape(rows, 2 ** (N_QUBITS - 1 - q), 2, 2**q)
            sh = torch.einsum("sij,najc->snaic", delta[layer, q].reshape(6, 2, 2), v)
            sh = ring(sh.reshape(6, rows, DIM))
            out.append(sh if suffix is None else sh @ suffix.T)
        psi = ring(phi)
    return torch.stack(out).reshape(n_layers, N_QUBITS, 3, 2, rows, DIM)


def tree_shift_states(alpha: torch.Tensor) -> torch.Tensor:
    """Amplitude vectors of every +-pi/2 shift of the 255 Gray-code angles: (rows, 255, 2, 256).

    Shifting theta_i of level k moves every tree angle alpha_c of that level by S[c, i] * pi/2.
    """
    rows = alpha.shape[0]
    factors, offset = [], 0
    for k in range(N_QUBITS):
        a = alpha[:, offset : offset + 2**k] / 2
        factors.append(_level_factor(torch.stack([torch.cos(a), torch.sin(a)], dim=-1), k))
        offset += 2**k
    out, offset = [], 0
    for k in range(N_QUBITS):
        others = torch.ones(rows, DIM, dtype=alpha.dtype)
        for j, f in enumerate(factors):
            if j != k:
                others = others * f
        n = 2**k
        signs = gray_sign_blocks(alpha.dtype)[k]  # (c, i)
        sign_pm = torch.tensor([1.0, -1.0], dtype=alpha.dtype)
        a = alpha[:, None, None, offset : offset + n] + SHIFT * signs.T[None, :, None, :] * sign_pm[None, None, :, None]
        a = a / 2
        f = _level_factor(torch.stack([torch.cos(a), torch.sin(a)], dim=-1), k)  # (rows, i, 2, 256)
        out.append(others[:, None, None, :] * f)
        offset += n
    return torch.cat(out, dim=1)


def _level_factor(cs: torch.Tensor, k: int) -> torch.Tensor:
    """(..., 2^k, 2) cos/sin of level k -> its factor of every amplitude (..., 256)."""
    lead = cs.shape[:-2]
    rest = DIM // 2 ** (k + 1)
    return cs[..., None].expand(*lead, 2**k, 2, rest).reshape(*lead, DIM)


def weight_gradient(enc, weights, encoding, grad_z, shots, generator, log) -> torch.Tensor:
    """sum_rows,j grad_z * dZ_j/dw from shifted circuits."""
    states = encode(encoding, enc)
    shifted = weight_shift_states(states, weights)
    z = measure(probabilities(shifted), shots, generator)  # (L, 8, 3, 2, rows, 8)
    log.add(shifted.shape[:-1].numel(), shots)
    dz = (z[:, :, :, 0] - z[:, :, :, 1]) / 2
    return torch.einsum("lqknj,nj->lqk", dz, grad_z)


def input_gradient(enc, weights, encoding, grad_z, shots, generator, log) -> torch.Tensor:
    """Gradient with respect to the encoding parameters (tree angles alpha, or RY angles)."""
    rows = enc.shape[0]
    total = product([layer_unitary(w) for w in weights])
    if encoding == "amplitude":
        shifted = tree_shift_states(enc).to(COMPLEX[enc.dtype])  # (rows, 255, 2, 256)
    else:
        pm = torch.tensor([1.0, -1.0], dtype=enc.dtype)[None, None, :, None]
        eye = torch.eye(N_QUBITS, dtype=enc.dtype)[None, :, None, :]
        x = enc[:, None, None, :] + SHIFT * eye * pm  # (rows, shifted qubit, sign, qubit)
        shifted = angle_states(x.reshape(-1, N_QUBITS)).reshape(rows, N_QUBITS, 2, DIM)
    finals = shifted @ total.T
    z = measure(probabilities(finals), shots, generator)
    log.add(finals.shape[:-1].numel(), shots)
    g = torch.einsum("nij,nj->ni", (z[:, :, 0] - z[:, :, 1]) / 2, grad_z)
    if encoding == "angle":
        return g
    out, offset = [], 0
    for k in range(N_QUBITS):
        n = 2**k
        out.append(g[:, offset : offset + n] @ gray_sign_blocks(enc.dtype)[k].T / n)
        offset += n
    return torch.cat(out, dim=1)


class ShotExpectation(torch.autograd.Function):
    """<Z_j> estimated with S shots; backward runs the parameter-shift circuits with S shots each."""

    @staticmethod
    def forward(ctx, enc, weights, encoding, shots, generator, log):
        states = encode(encoding, enc)
        z = measure(probabilities(apply_layers(states, weights)), shots, generator)
        log.add(enc.shape[0], shots)
        ctx.save_for_backward(enc, weights)
        ctx.cfg = (encoding, shots, generator, log)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        enc, weights = ctx.saved_tensors
        encoding, shots, generator, log = ctx.cfg
        g_enc = g_w = None
        with torch.no_grad():
            if ctx.needs_input_grad[1]:
                g_w = weight_gradient(enc, weights, encoding, grad_z, shots, generator, log)
            if ctx.needs_input_grad[0]:
                g_enc = input_gradient(enc, weights, encoding, grad_z, shots, generator, log)
        return g_enc, g_w, None, None, None, None
