"""Batched torch statevector executor for the circuits of `circuits.py`, differentiable.

States are (rows, 256) complex tensors indexed like qiskit (bit q of the index is qubit q), or (K, rows, 256)
for K models at once.
"""

from __future__ import annotations

import math
from functools import lru_cache, wraps
from typing import Callable

import torch

from .circuits import N_QUBITS, gray_signs

DIM = 2**N_QUBITS
COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}


def _table(maxsize: int | None = None) -> Callable:
    """Cache a builder of constant tensors, building them as ordinary tensors even when first asked for in
    inference mode (`_Ansatz` runs there): an inference tensor may never enter autograd afterwards."""
    def wrap(fn: Callable) -> Callable:
        @lru_cache(maxsize=maxsize)
        @wraps(fn)
        def build(*args):
            with torch.inference_mode(False):
                return fn(*args)
        return build
    return wrap


@_table()
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


@_table()
def z_signs(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(256, 8) matrix of 1 - 2*bit_j(b), so <Z> = probs @ z_signs."""
    b = torch.arange(DIM).unsqueeze(1)
    return (1 - 2 * ((b >> torch.arange(N_QUBITS)) & 1)).to(dtype)


@_table()
def _u3_tables(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A (3, 12) matrix and offset that map angles (theta, phi, lambda) to the arguments of U3's four entries
    cos(a) exp(i b) = cos(a) (cos(b), cos(b - pi/2)): a = theta/2 + shift (c, -s, s, c) and b = 0, lambda,
    phi, phi + lambda. Columns: the four a, then (b, b - pi/2) for each entry."""
    shift = torch.tensor([0.0, math.pi / 2, -math.pi / 2, 0.0], dtype=dtype)
    phase = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=dtype)
    half_theta = torch.tensor([[0.5], [0.0], [0.0]], dtype=dtype).expand(3, 4)
    matrix = torch.cat([half_theta, phase.repeat_interleave(2, dim=1)], dim=1)
    return matrix, torch.cat([shift, torch.tensor([0.0, -math.pi / 2], dtype=dtype).repeat(4)])


def u3_matrices(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) angles -> (..., 2, 2) complex U3(theta, phi, lambda), as qiskit defines it, in few ops (one
    product, one cosine, one multiplication): a training step builds them every time."""
    matrix, offset = _u3_tables(w.dtype)
    return u3_from_cosines(torch.cos(torch.addmm(offset, w.reshape(-1, 3), matrix))).view(w.shape[:-1] + (2, 2))


def u3_from_cosines(cosines: torch.Tensor) -> torch.Tensor:
    """(..., 12) cosines of U3's entry arguments (`_u3_tables`' columns: cos a for the four entries, then
    cos b and cos(b - pi/2) for each) -> (..., 2, 2) complex entries cos(a) exp(i b)."""
    mag, phase = cosines.split([4, 8], dim=-1)
    # Not torch.polar: its backward assumes a non-negative magnitude.
    return torch.view_as_complex(phase.unflatten(-1, (4, 2)) * mag.unsqueeze(-1)).unflatten(-1, (2, 2))


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product over the last two axes."""
    return (a.unsqueeze(-1).unsqueeze(-3) * b.unsqueeze(-2).unsqueeze(-4)).flatten(-4, -3).flatten(-2, -1)


def gate_halves(gates: torch.Tensor) -> torch.Tensor:
    """(..., 8, 2, 2) single-qubit gates -> (..., 2, 16, 16): the tensor products of qubits 7..4
    (high half) and 3..0 (low half), most significant qubit first."""
    members = gates.flip(-3).unflatten(-3, (2, 2, 2)).unbind(-3)  # each (..., half, pair, 2, 2)
    return kron(*kron(*members).unbind(-3))


def half_unitaries(weights: torch.Tensor) -> torch.Tensor:
    """(..., L, 8, 3) weights -> (..., L, 2, 16, 16) high and low halves of every layer's U3 product."""
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


# The ansatz runs on states laid out as (..., 16, rows, 16) = (models, high half, row, low half): one model's
# (16, rows, 16) with weights (L, 8, 3), or K models' (K, 16, rows, 16) with their own weights (K, L, 8, 3).
# Both halves of a layer are then one matrix product each over all rows and models (the low half contracts
# the last axis, the high half the one before the rows) and the CNOT ring is one gather: per layer 2 * 16
# complex multiply-adds per amplitude and three tensor ops, whatever the batch size and the number of
# models, so the per-operation overhead that dominates a training step at small batches is paid once per
# step. The last layer's ring permutes basis states, so it is folded into the Z signs (`_final_signs`)
# rather than gathered.


@_table(64)
def ring_gathers(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat gather indices of the CNOT ring on the (16, rows, 16) layout: (to the same layout, its inverse,
    to the (rows, 256) layout)."""
    g = ring_permutation()
    n = torch.arange(rows)[:, None]
    src = (g // 16) * (rows * 16) + n * 16 + g % 16  # (rows, 256): flat source of out[n, j]
    mid = src.reshape(rows, 16, 16).transpose(0, 1).reshape(-1)
    return mid, torch.argsort(mid), src.reshape(-1)


def gather_states(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each model's states gathered by flat indices into one model's states, shape kept. One model's is a 1-D
    gather, faster than the same gather along the second axis of (K, n), which K models take, so that the
    indices do not grow with K."""
    if x.numel() == index.numel():
        return x.reshape(-1).index_select(0, index).reshape(x.shape)
    return x.reshape(-1, index.numel()).index_select(1, index).reshape(x.shape)


@_table()
def _final_signs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """z_signs with the last layer's CNOT ring folded in, for states before that ring in the halves layout:
    (512, 8) against the squared real and imaginary parts side by side, ordered (high half, low half, part),
    and (8, 512) for the backward pass: d <Z>/d conj(psi) = 2 conj(psi) * sign, against the real and
    imaginary parts (+2 sign, -2 sign)."""
    s = z_signs(dtype)[torch.argsort(ring_permutation())].reshape(16, 16, 1, 8)
    return s.expand(16, 16, 2, 8).reshape(512, 8), torch.cat([2 * s, -2 * s], dim=2).reshape(512, 8).T.contiguous()


def to_halves(states: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(..., rows, 256) -> (..., 16, rows, 16), contiguous, of complex `dtype`, or of its real counterpart
    for real states (the first layer multiplies them as real numbers, `_real_times`)."""
    halves = states.unflatten(-1, (16, 16)).transpose(-3, -2)
    dtype = dtype if states.is_complex() else dtype.to_real()
    return halves.contiguous() if states.dtype == dtype else halves.to(dtype, memory_format=torch.contiguous_format)


def _per_layer(halves: torch.Tensor, half: int) -> tuple[torch.Tensor, ...]:
    """One half's (..., 16, 16) unitary for each layer of halves (..., L, 2, 16, 16), as views."""
    return halves.select(-3, half).unbind(-3)


def _real_times(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for real a (..., m, k) and complex b (..., k, n), as one real product of a with b's real and
    imaginary parts side by side (half a complex product's arithmetic, and no complex copy of a)."""
    parts = torch.view_as_real(b).reshape(b.shape[:-1] + (-1,))  # a view unless b is transposed (16 x 16)
    if out is None:
        return torch.view_as_complex((a @ parts).unflatten(-1, (-1, 2)))
    torch.matmul(a, parts, out=torch.view_as_real(out).flatten(-2))
    return out


def _layers(x: torch.Tensor, halves: torch.Tensor, saved: list | None = None) -> torch.Tensor:
    """States (..., 16, rows, 16), real or complex, through the layers (halves (..., L, 2, 16, 16)) -> the
    final states in the same layout, complex, before the last layer's CNOT ring. Each step is as few tensor
    ops as it can be: at training batch sizes their dispatch costs about as much as their arithmetic, so the
    states stay (..., 16 * rows, 16) views between the products, and the ring gathers them as `gather_states`
    does (one model's in 1-D, K models' along the second axis of (K, n)) without its shape checks."""
    lead, rows = x.shape[:-3], x.shape[-2]
    by_16, per_high, flat = lead + (-1, 16), lead + (16, -1), lead + (-1,)
    mid = ring_gathers(rows)[0]
    his, los = _per_layer(halves, 0), _per_layer(halves.mT, 1)
    x = x.view(by_16)
    z = (x @ los[0] if x.is_complex() else _real_times(x, los[0])).view(per_high)
    for layer, hi in enumerate(his):
        if layer:
            z = (x @ los[layer]).view(per_high)
        v = hi @ z
        if saved is not None:
            saved.append((x, z))
        x = v.view(by_16) if layer == len(his) - 1 else v.view(flat).index_select(len(lead), mid).view(by_16)
    return x.view(lead + (16, rows, 16))


def _final_expectations(x: torch.Tensor) -> torch.Tensor:
    """<Z_j> of final states (..., 16, rows, 16) before the last ring -> (..., rows, 8). The squares are
    written row-major, so that one product sums them over both halves."""
    squares = torch.empty(x.shape[:-3] + (x.shape[-2], 16, 32), dtype=x.real.dtype)
    torch.square(torch.view_as_real(x).flatten(-2), out=squares.transpose(-3, -2))
    return squares.flatten(-2) @ _final_signs(squares.dtype)[0]


def apply_layers(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Apply the ansatz (weights (L, 8, 3)) to states (rows, 256), differentiable by autograd."""
    if len(weights) == 0:
        return states
    halves = half_unitaries(weights)
    x = _layers(to_halves(states, halves.dtype), halves)
    return gather_states(x, ring_gathers(len(states))[2]).reshape(len(states), DIM)


def ansatz_expectations(states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Exact <Z_j> after the ansatz: states (rows, 256) and weights (L, 8, 3) -> (rows, 8), or K models'
    states (K, rows, 256) and weights (K, L, 8, 3) -> (K, rows, 8), model k's rows and gradients equal to
    its own; gradients by one reverse pass (`_Ansatz`)."""
    if weights.shape[-3] == 0:
        return expectations(states.to(COMPLEX[weights.dtype]))
    if torch.is_grad_enabled() and (states.requires_grad or weights.requires_grad):
        return _Ansatz.apply(states, weights)
    with torch.no_grad():
        halves = half_unitaries(weights)
        return _final_expectations(_layers(to_halves(states, halves.dtype), halves))


class _Ansatz(torch.autograd.Function):
    """states (..., rows, 256), real or complex, and weights (..., L, 8, 3) -> <Z_j>, differentiated by hand.

    Autograd through the layers and the gate construction records about 60 small ops per layer,
    which cost more than the arithmetic at training batch sizes. The backward here runs the
    layers in reverse once (one gather and four matrix products per layer) and gets every U3
    angle's derivative from a 2x2 partial trace (`_weight_grads`). Gradients are stored as torch
    stores complex ones: d loss/d Re + i d loss/d Im.
    """

    # Both passes run in inference mode, where the kernel's many small ops skip autograd's bookkeeping (the
    # pair 10% faster, measured at qnn-l5's batch of 32); what leaves them is cloned into an ordinary tensor.
    # There a product copies any operand that is a conjugated view (torch resolves the conjugate bit first),
    # so the reverse pass carries the conjugate of d loss/d psi: then every product reads its operands as
    # they are or transposed. With conjugated views a qnn-l5 step copied ten 131 KB operands.

    @staticmethod
    def forward(ctx, states, weights):
        with torch.inference_mode():
            halves = half_unitaries(weights)
            saved: list = []
            final = _layers(to_halves(states, halves.dtype), halves, saved)
            z = _final_expectations(final)
        ctx.saved = (saved, final, halves)
        ctx.save_for_backward(states, weights)  # so that autograd refuses a backward after either changed in place
        ctx.real_input = not states.is_complex()
        return z.clone()

    @staticmethod
    def backward(ctx, grad_z):
        _, weights = ctx.saved_tensors  # autograd checks their versions here
        with torch.inference_mode():
            grads = _Ansatz.reverse(ctx, grad_z, weights)
        ctx.saved = None
        return tuple(None if g is None else g.clone() for g in grads)

    @staticmethod
    def reverse(ctx, grad_z, weights):
        saved, final, halves = ctx.saved
        lead, rows = final.shape[:-3], final.shape[-2]
        mid_inv = ring_gathers(rows)[1]
        # conj(d loss/d psi) of <Z> = |psi|^2 @ signs: conj(psi) times a real factor per amplitude.
        factor = (grad_z @ _final_signs(grad_z.dtype)[1]).unflatten(-1, (16, 16, 2)).transpose(-4, -3)
        grad = torch.view_as_complex(torch.view_as_real(final) * factor)
        # Per layer, the conjugate of U_half^dagger (d loss/d U_half): the high half, and the low half
        # transposed; layer-major, so that each layer's block is contiguous for the products' `out`.
        his_t, los = _per_layer(halves.mT, 0), _per_layer(halves, 1)
        env = torch.empty(2, len(his_t), *lead, 16, 16, dtype=halves.dtype)
        env_lo, env_hi = env[0].unbind(0), env[1].unbind(0)
        by_16, per_high, flat = lead + (-1, 16), lead + (16, -1), lead + (-1,)
        last = len(his_t) - 1
        for layer in range(last, -1, -1):
            x, z = saved[layer]  # x: (..., 16 * rows, 16), z: (..., 16, rows * 16)
            if layer < last:
                grad = grad.view(flat).index_select(len(lead), mid_inv)
            gz = his_t[layer] @ grad.view(per_high)
            torch.matmul(gz, z.mT, out=env_hi[layer])
            gz = gz.view(by_16)
            times = torch.matmul if x.is_complex() else _real_times  # real states enter the first layer
            if layer == 0 and not ctx.needs_input_grad[0]:
                # x^T (gz lo) = (x^T gz) lo: the gradient at the input is not needed, so the first layer
                # skips one of its four large products.
                torch.matmul(times(x.mT, gz), los[0], out=env_lo[0])
                break
            grad = gz @ los[layer]
            times(x.mT, grad, out=env_lo[layer])
        g_states = g_w = None
        if ctx.needs_input_grad[0]:
            g_states = grad.view(final.shape).transpose(-3, -2).flatten(-2)
            g_states = g_states.real if ctx.real_input else torch.conj_physical(g_states)
        if ctx.needs_input_grad[1]:
            layer_major = weights.movedim(-3, 0)  # env's order: layer, then model
            g_w = _weight_grads(layer_major, env.flatten(1, -3)).view(layer_major.shape).movedim(0, -3)
        return g_states, g_w


@_table()
def _partial_traces(dtype: torch.dtype) -> torch.Tensor:
    """(2, 256, 16) 0/1 matrices: a flattened 16x16 operator on 4 qubits ([0]: transposed, [1]: as is) ->
    its 4 single-qubit partial traces (qubit within the half least significant first, row, column)."""
    flat = torch.arange(DIM)
    a, b = flat // 16, flat % 16
    out = torch.zeros(DIM, 4, 2, 2, dtype=dtype)
    for bit in range(4):
        same_rest = ((a ^ b) | (1 << bit)) == (1 << bit)
        out[flat[same_rest], bit, (a[same_rest] >> bit) & 1, (b[same_rest] >> bit) & 1] = 1
    return torch.stack([out.reshape(16, 16, 16).transpose(0, 1).reshape(DIM, 16), out.reshape(DIM, 16)])


@_table()
def _gradient_tables(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Tables of `_weight_grads`: angles (theta, phi, lambda) -> the arguments of cos lambda, sin lambda,
    cos theta, cos(theta -+ lambda), sin(theta +- lambda) (a (3, 7) matrix and offset); those cosines ->
    the (8, 3) matrix W, flattened, of each gate (a (7, 24) matrix and offset)."""
    angles = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0] * 7, [1, 1, 0, -1, 1, 1, -1]], dtype=dtype)
    offset = torch.tensor([0, -1, 0, 0, 0, -1, -1], dtype=dtype) * (math.pi / 2)
    c_lam, s_lam, c_th, c_minus, c_plus, s_plus, s_minus = torch.eye(7, dtype=dtype)
    zero = torch.zeros(7, dtype=dtype)
    rows = [  # (theta, phi, lambda) columns for Im m00, Re m01, ..., Im m11; Re m00's row is zero
        [zero, c_th / 2, zero],
        [-c_lam / 2, -(c_minus - c_plus) / 4, zero],
        [s_lam / 2, -(s_plus + s_minus) / 4, zero],
        [c_lam / 2, (c_minus - c_plus) / 4, zero],
        [s_lam / 2, -(s_plus + s_minus) / 4, zero],
        [zero, zero, zero],
        [zero, -c_th / 2, zero],
    ]
    cosines = torch.stack([torch.stack(r, dim=1) for r in [[zero] * 3] + rows])  # (8, 7, 3)
    const = torch.zeros(8, 3, dtype=dtype)
    const[1, 1], const[7, 1], const[7, 2] = -0.5, -0.5, -1.0
    return angles, offset, cosines.permute(1, 0, 2).reshape(7, 24), const.reshape(24)


def _weight_grads(weights: torch.Tensor, env_conj: torch.Tensor) -> torch.Tensor:
    """d loss/d (theta, phi, lambda) of every gate, (n, 8, 3), from weights (..., 8, 3) of n = L (* K) layers in
    env's order and the conjugate of `env` ([low, high], n, 16, 16; see `_Ansatz.reverse`).

    With m the 2x2 partial trace of U_half^dagger G_half onto a gate's qubit (G = d loss/d U_half),
    d loss/dw = Re sum(conj(m) * U^dagger dU/dw), and for U3 the matrices U^dagger dU/dw are
    theta: [[0, -e^(i lambda)], [e^(-i lambda), 0]] / 2, phi: i [[s^2, sc e^(i lambda)], [sc e^(-i lambda), c^2]]
    (c, s = cos, sin theta/2), lambda: i [[0, 0], [0, 1]]. So each gate's gradient is conj(m)'s real and
    imaginary parts times an (8, 3) real matrix W of cosines of theta, lambda and their sum and difference.
    """
    n = env_conj.shape[1]
    traces = env_conj.flatten(-2) @ _partial_traces(env_conj.dtype)  # (half, n, qubit in half * 4 entries)
    parts = torch.view_as_real(traces.transpose(0, 1).reshape(n, N_QUBITS, 1, 4)).flatten(-2)
    angles, offset, cosines, const = _gradient_tables(weights.dtype)
    w = torch.addmm(const, torch.cos(torch.addmm(offset, weights.reshape(-1, 3), angles)), cosines)
    return (parts @ w.view(n, N_QUBITS, 8, 3)).view(n, N_QUBITS, 3)


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


@_table()
def gray_sign_blocks(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(gray_signs(k), dtype=dtype) for k in range(N_QUBITS))


def expectations(states: torch.Tensor) -> torch.Tensor:
    """Exact <Z_j> for j = 0..7: (rows, 256) -> (rows, 8)."""
    probs = probabilities(states)
    return probs @ z_signs(probs.dtype)


def probabilities(states: torch.Tensor) -> torch.Tensor:
    return states.real**2 + states.imag**2
