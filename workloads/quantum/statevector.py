"""Batched torch statevector executor for the circuits of `circuits.py`, differentiable.

States are (rows, 256) complex tensors indexed like qiskit (bit q of the index is qubit q).
"""

from __future__ import annotations

import math
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


@lru_cache(maxsize=None)
def _u3_tables(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """U3's entries as cos(theta/2 + shift) exp(i angles @ phase): the shifts give c, -s, s, c
    and the phase matrix maps (theta, phi, lambda) to 0, lambda, phi, phi + lambda."""
    shift = torch.tensor([0.0, math.pi / 2, -math.pi / 2, 0.0], dtype=dtype)
    phase = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=dtype)
    return shift, phase


def u3_matrices(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) angles -> (..., 2, 2) complex U3(theta, phi, lambda), as qiskit defines it."""
    shift, phase = _u3_tables(w.dtype)
    mag, arg = torch.cos(w[..., :1] / 2 + shift), w @ phase
    # Not torch.polar: its backward assumes a non-negative magnitude.
    return torch.complex(mag * torch.cos(arg), mag * torch.sin(arg)).unflatten(-1, (2, 2))


def _kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product over the last two axes."""
    return (a[..., :, None, :, None] * b[..., None, :, None, :]).flatten(-4, -3).flatten(-2, -1)


def gate_halves(gates: torch.Tensor) -> torch.Tensor:
    """(..., 8, 2, 2) single-qubit gates -> (..., 2, 16, 16): the tensor products of qubits 7..4
    (high half) and 3..0 (low half), most significant qubit first."""
    g = gates.flip(-3).unflatten(-3, (2, 2, 2))  # (..., half, pair, member, 2, 2)
    pairs = _kron(g[..., 0, :, :], g[..., 1, :, :])
    return _kron(pairs[..., 0, :, :], pairs[..., 1, :, :])


def half_unitaries(weights: torch.Tensor) -> torch.Tensor:
    """(L, 8, 3) weights -> (L, 2, 16, 16) high and low halves of every layer's U3 product."""
    return gate_halves(u3_matrices(weights))


def u3_kron(gates: torch.Tensor) -> torch.Tensor:
    """(8, 2, 2) single-qubit gates -> their tensor product, qubit 7 most significant."""
    hi, lo = gate_halves(gates)
    return torch.kron(hi, lo)


def layer_unitary(w_layer: torch.Tensor) -> torch.Tensor:
    """(8, 3) weights of one layer -> (256, 256): U3 on every qubit, then the CNOT ring."""
    return u3_kron(u3_matrices(w_layer))[ring_permutation()]


def ring(states: torch.Tensor) -> torch.Tensor:
    """Apply the CNOT ring to states (..., 256)."""
    return states[..., ring_permutation()]


# The ansatz runs on states laid out as (16, rows, 16) = (high half, row, low half), so that both
# halves of a layer are one matrix product each over all rows (the low half contracts the last
# axis, the high half the first) and the CNOT ring is one gather. Per layer that is 2 * 16 complex
# multiply-adds per amplitude and three tensor ops, whatever the batch size.


@lru_cache(maxsize=64)
def ring_gathers(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat gather indices of the CNOT ring on the (16, rows, 16) layout: (to the same layout,
    its inverse, to the (rows, 256) layout, its inverse)."""
    g = ring_permutation()
    n = torch.arange(rows)[:, None]
    src = (g // 16) * (rows * 16) + n * 16 + g % 16  # (rows, 256): flat source of out[n, j]
    to_rows = src.reshape(-1)
    to_halves = src.reshape(rows, 16, 16).transpose(0, 1).reshape(-1)
    return to_halves, torch.argsort(to_halves), to_rows, torch.argsort(to_rows)


def to_halves(states: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 256) -> (16, rows, 16) of complex `dtype`."""
    return states.reshape(-1, 16, 16).transpose(0, 1).to(dtype, memory_format=torch.contiguous_format)


def _layers(x: torch.Tensor, halves: torch.Tensor, saved: list | None = None) -> torch.Tensor:
    """States in the (16, rows, 16) layout through the layers -> final states (rows, 256)."""
    rows = x.shape[1]
    mid, _, last, _ = ring_gathers(rows)
    for layer, (hi, lo) in enumerate(halves):
        z = (x.reshape(-1, 16) @ lo.T).reshape(16, -1)
        v = hi @ z
        if saved is not None:
            saved.append((x, z))
        x = v.reshape(-1).index_select(0, last if layer == len(halves) - 1 else mid).reshape(16, rows, 16)
    return x.reshape(rows, DIM)


def apply_layers(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Apply the ansatz (weights (L, 8, 3)) to states (rows, 256), differentiable by autograd."""
    if len(weights) == 0:
        return states
    x = to_halves(states, COMPLEX[weights.dtype])
    return _layers(x, half_unitaries(weights))


def ansatz_expectations(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact <Z_j> after the ansatz, (rows, 8), with gradients by one reverse pass (`_Ansatz`)."""
    if torch.is_grad_enabled() and (states.requires_grad or weights.requires_grad):
        return _Ansatz.apply(states, weights)
    with torch.no_grad():
        return expectations(apply_layers(states, weights))


class _Ansatz(torch.autograd.Function):
    """states (rows, 256), real or complex, and weights (L, 8, 3) -> <Z_j>, differentiated by hand.

    Autograd through the layers and the gate construction records about 60 small ops per layer,
    which cost more than the arithmetic at training batch sizes. The backward here runs the
    layers in reverse once (one gather and four matrix products per layer) and gets every U3
    angle's derivative from a 2x2 partial trace (`_weight_grads`). Gradients are stored as torch
    stores complex ones: d loss/d Re + i d loss/d Im.
    """

    @staticmethod
    def forward(ctx, states, weights):
        gates = u3_matrices(weights)
        halves = gate_halves(gates)
        saved: list = []
        final = _layers(to_halves(states, halves.dtype), halves, saved)
        ctx.saved = saved
        ctx.real_input = not states.is_complex()
        ctx.save_for_backward(final, weights, gates, halves)
        return expectations(final)

    @staticmethod
    def backward(ctx, grad_z):
        final, weights, gates, halves = ctx.saved_tensors
        rows, n_layers = final.shape[0], len(halves)
        _, mid_inv, _, last_inv = ring_gathers(rows)
        halves_conj = halves.conj().resolve_conj()
        # d loss/d psi of z = |psi|^2 @ signs, a real factor per amplitude.
        factor = (2 * grad_z) @ z_signs(grad_z.dtype).T
        grad = torch.view_as_complex(torch.view_as_real(final) * factor[..., None]).reshape(-1)
        # Per layer, U_half^dagger (d loss/d U_half): the high half, and the low half transposed.
        env = torch.empty(2, n_layers, 16, 16, dtype=halves.dtype)
        for layer in range(n_layers - 1, -1, -1):
            x, z = ctx.saved[layer]
            gv = grad.index_select(0, last_inv if layer == n_layers - 1 else mid_inv).reshape(16, -1)
            gz = halves[layer, 0].mH @ gv
            gx = gz.reshape(-1, 16) @ halves_conj[layer, 1]
            torch.mm(gz, z.mH, out=env[0, layer])
            torch.mm(x.reshape(-1, 16).mH, gx, out=env[1, layer])
            grad = gx.reshape(-1)
        ctx.saved = None
        g_states = g_w = None
        if ctx.needs_input_grad[0]:
            g_states = grad.reshape(16, rows, 16).transpose(0, 1).reshape(rows, DIM)
            g_states = g_states.real if ctx.real_input else g_states
        if ctx.needs_input_grad[1]:
            g_w = _weight_grads(weights, gates, env)
        return g_states, g_w


# Many models at once: K models' states in a (K, 16, rows, 16) layout and weights (K, L, 8, 3). Each
# layer is two batched matrix products and one gather for all K models, so the per-operation overhead
# that dominates one model's training step at small batches is paid once per step, not K times.


def to_halves_many(states: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(K, rows, 256) -> (K, 16, rows, 16) of complex `dtype`."""
    k, rows = states.shape[:2]
    return states.reshape(k, rows, 16, 16).transpose(1, 2).to(dtype, memory_format=torch.contiguous_format)


def _layers_many(x: torch.Tensor, halves: torch.Tensor, saved: list | None = None) -> torch.Tensor:
    """`_layers` for K models: (K, 16, rows, 16) states, (K, L, 2, 16, 16) halves -> (K, rows, 256)."""
    k, rows, n_layers = x.shape[0], x.shape[2], halves.shape[1]
    mid, _, last, _ = ring_gathers(rows)
    for layer in range(n_layers):
        z = (x.reshape(k, -1, 16) @ halves[:, layer, 1].mT).reshape(k, 16, -1)
        v = halves[:, layer, 0] @ z
        if saved is not None:
            saved.append((x, z))
        x = v.reshape(k, -1).index_select(1, last if layer == n_layers - 1 else mid).reshape(k, 16, rows, 16)
    return x.reshape(k, rows, DIM)


def many_expectations(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact <Z_j> of K models: states (K, rows, 256) and weights (K, L, 8, 3) -> (K, rows, 8); model k's
    rows equal `ansatz_expectations(states[k], weights[k])` to rounding, and so do its gradients."""
    if torch.is_grad_enabled() and (states.requires_grad or weights.requires_grad):
        return _ManyAnsatz.apply(states, weights)
    with torch.no_grad():
        if weights.shape[1] == 0:
            return expectations(states.to(COMPLEX[weights.dtype]))
        halves = gate_halves(u3_matrices(weights))
        return expectations(_layers_many(to_halves_many(states, halves.dtype), halves))


class _ManyAnsatz(torch.autograd.Function):
    """`_Ansatz` for K models with their own weights: the same reverse pass, batched over the models."""

    @staticmethod
    def forward(ctx, states, weights):
        gates = u3_matrices(weights)
        halves = gate_halves(gates)
        saved: list = []
        final = _layers_many(to_halves_many(states, halves.dtype), halves, saved)
        ctx.saved = saved
        ctx.real_input = not states.is_complex()
        ctx.save_for_backward(final, weights, gates, halves)
        return expectations(final)

    @staticmethod
    def backward(ctx, grad_z):
        final, weights, gates, halves = ctx.saved_tensors
        k, rows, n_layers = final.shape[0], final.shape[1], halves.shape[1]
        _, mid_inv, _, last_inv = ring_gathers(rows)
        halves_conj = halves.conj().resolve_conj()
        factor = (2 * grad_z) @ z_signs(grad_z.dtype).T
        grad = torch.view_as_complex(torch.view_as_real(final) * factor[..., None]).reshape(k, -1)
        # Layer-major, so that each layer's (K, 16, 16) block is contiguous for bmm's `out`.
        env = torch.empty(2, n_layers, k, 16, 16, dtype=halves.dtype)
        for layer in range(n_layers - 1, -1, -1):
            x, z = ctx.saved[layer]
            gv = grad.index_select(1, last_inv if layer == n_layers - 1 else mid_inv).reshape(k, 16, -1)
            gz = halves[:, layer, 0].mH @ gv
            gx = gz.reshape(k, -1, 16) @ halves_conj[:, layer, 1]
            torch.bmm(gz, z.mH, out=env[0, layer])
            torch.bmm(x.reshape(k, -1, 16).mH, gx, out=env[1, layer])
            grad = gx.reshape(k, -1)
        ctx.saved = None
        g_states = g_w = None
        if ctx.needs_input_grad[0]:
            g_states = grad.reshape(k, 16, rows, 16).transpose(1, 2).reshape(k, rows, DIM)
            g_states = g_states.real if ctx.real_input else g_states
        if ctx.needs_input_grad[1]:
            # Every (layer, model) pair is one "layer" of `_weight_grads`.
            flat = _weight_grads(weights.transpose(0, 1).reshape(-1, N_QUBITS, 3),
                                 gates.transpose(0, 1).reshape(-1, N_QUBITS, 2, 2), env.flatten(1, 2))
            g_w = flat.reshape(n_layers, k, N_QUBITS, 3).transpose(0, 1)
        return g_states, g_w


@lru_cache(maxsize=None)
def _partial_traces(dtype: torch.dtype) -> torch.Tensor:
    """(2, 256, 16) 0/1 matrices: a flattened 16x16 operator on 4 qubits ([0]: as is, [1]:
    transposed) -> its 4 single-qubit partial traces (position most significant first, row, column)."""
    flat = torch.arange(DIM)
    a, b = flat // 16, flat % 16
    out = torch.zeros(DIM, 4, 2, 2, dtype=dtype)
    for p in range(4):
        bit = 3 - p
        same_rest = ((a ^ b) | (1 << bit)) == (1 << bit)
        out[flat[same_rest], p, (a[same_rest] >> bit) & 1, (b[same_rest] >> bit) & 1] = 1
    return torch.stack([out.reshape(DIM, 16), out.reshape(16, 16, 16).transpose(0, 1).reshape(DIM, 16)])


@lru_cache(maxsize=None)
def _phase_masks(dtype: torch.dtype) -> torch.Tensor:
    """(4, 2): the U3 entries that carry phi (the second row) and lambda (the second column)."""
    return torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)


def _weight_grads(weights: torch.Tensor, gates: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """d loss/d (theta, phi, lambda) of every gate U from `env` (see `_Ansatz.backward`).

    Let m be the 2x2 partial trace of U_half^dagger G_half onto the gate's qubit (G = d loss/d U).
    Then d loss/dw = Re sum(dU/dw * conj(U m)), with dU/dtheta = U3(theta + pi, phi, lambda) / 2,
    dU/dphi = i U on the second row and dU/dlambda = i U on the second column.
    """
    n_layers = len(weights)
    traces = (env.flatten(-2) @ _partial_traces(env.dtype)).transpose(0, 1)  # (L, half, 16)
    v = (gates @ traces.reshape(n_layers, 8, 2, 2).flip(1)).conj().flatten(-2)
    d_theta = u3_matrices(weights + torch.tensor([math.pi, 0.0, 0.0], dtype=weights.dtype)).flatten(-2)
    g_theta = (d_theta * v).real.sum(-1, keepdim=True) / 2
    g_phases = -((gates.flatten(-2) * v).imag @ _phase_masks(weights.dtype))
    return torch.cat([g_theta, g_phases], dim=-1)


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
