"""Exact noisy sampling of a measured ISA circuit under an Aer noise model: quantum trajectories with shot
branching, vectorized over the circuits of a job.

Why: on heavy-hex devices the routed 8-qubit ring of qnn-angle-l2 occupies 12 qubits. A density matrix of
12 qubits costs 4^12 per gate (Aer: ~24 s per circuit), and Aer's trajectories run every shot through every
noisy gate (~2.5 s per circuit at 128 shots). Both are exact; so is this, and it is much cheaper:

* every run of gates on one qubit is fused into the next two-qubit block (noise included: each block is one
  channel, the composition of the gates' ideal unitaries and the noise model's errors after them), so a
  circuit is ~one channel per two-qubit gate pair instead of ~300 noisy operations;
* shots that follow the same Kraus branch share one state vector (shot branching): a block's Kraus
  probabilities p_k = <psi|K_k^+ K_k|psi> split a branch's shots multinomially, so the number of states
  grows with the errors that occur, not with the shots;
* the measured qubits are sampled from each branch's |psi|^2, then the readout error flips bits.

Each shot is thus an exact sample of the noisy output distribution, the same one a density matrix gives.
Circuits with mid-circuit measurements, resets or control flow are not handled (`Unsupported`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_STATE_BYTES = 256 * 2**20  # branch states held at once (circuits are simulated in chunks below this)


class Unsupported(ValueError):
    """A circuit this sampler does not simulate (the caller falls back to Aer)."""


@dataclass(frozen=True)
class NoiseTables:
    """The noise model's channels per (instruction, physical qubits) and readout assignment per qubit."""

    local: dict[tuple[str, tuple[int, ...]], np.ndarray]  # qiskit SuperOp matrices
    default: dict[str, np.ndarray]
    readout: dict[int, np.ndarray]  # P[true, measured]
    readout_default: np.ndarray | None

    def channel(self, name: str, qubits: tuple[int, ...]) -> np.ndarray | None:
        return self.local.get((name, qubits), self.default.get(name))

    def assignment(self, qubit: int) -> np.ndarray:
        hit = self.readout.get(qubit, self.readout_default)
        return np.eye(2) if hit is None else hit


def noise_tables(noise_model: Any) -> NoiseTables:
    """Channels and readout errors of an Aer NoiseModel, read through its public dict form."""
    from qiskit.quantum_info import SuperOp
    from qiskit_aer.noise import QuantumError

    local: dict = {}
    default: dict = {}
    readout: dict = {}
    readout_default = None
    for e in noise_model.to_dict()["errors"]:
        if e["type"] == "roerror":
            p = np.asarray(e["probabilities"], dtype=float)
            if "gate_qubits" in e:
                readout.update({int(q[0]): p for q in e["gate_qubits"]})
            else:
                readout_default = p
            continue
        s = SuperOp(QuantumError.from_dict(e).to_quantumchannel()).data
        for op in e["operations"]:
            if "gate_qubits" in e:
                local.update({(op, tuple(int(x) for x in q)): s for q in e["gate_qubits"]})
            else:
                default[op] = s
    return NoiseTables(local, default, readout, readout_default)


# ----------------------------------------------------------------------------------------------------------
# channels in this module's convention: a k-qubit operator's index lists its qubits most significant first
# (qiskit lists them least significant first); a superop S[(r, c), (r', c')] maps rho[r', c'] to rho[r, c].


def _from_qiskit(a: np.ndarray, k: int, n_index: int) -> np.ndarray:
    """Reverse the qubit order inside each of `n_index` indices of 2^k (the trailing axes of `a`)."""
    lead = a.shape[: a.ndim - n_index]
    t = a.reshape(*lead, *(2,) * (k * n_index))
    base = len(lead)
    perm = list(range(base)) + [base + i * k + (k - 1 - j) for i in range(n_index) for j in range(k)]
    return t.transpose(perm).reshape(a.shape)


def _unitary_superop(u: np.ndarray) -> np.ndarray:
    """(n, d, d) unitaries -> (n, d^2, d^2) superops."""
    n, d, _ = u.shape
    return np.einsum("nab,ncd->nacbd", u, u.conj()).reshape(n, d * d, d * d)


def _noise_superop(s: np.ndarray, k: int) -> np.ndarray:
    """A qiskit SuperOp matrix (column-stacked) -> this convention, shape (1, d^2, d^2)."""
    d = 2**k
    t = s.reshape(d, d, d, d).transpose(1, 0, 3, 2)  # [row_out, col_out, row_in, col_in]
    return _from_qiskit(t, k, 4).reshape(1, d * d, d * d)


def _tensor(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """Two one-qubit superops (n, 4, 4) -> the two-qubit superop of a (first) and b (second)."""
    ta = sa.reshape(-1, 2, 2, 2, 2)
    tb = sb.reshape(-1, 2, 2, 2, 2)
    return np.einsum("naceg,nbdfh->nabcdefgh", ta, tb).reshape(-1, 16, 16)


def _swap_superop(s: np.ndarray) -> np.ndarray:
    """A two-qubit superop with its qubits exchanged."""
    t = s.reshape(-1, *(2,) * 8)
    return t.transpose(0, 2, 1, 4, 3, 6, 5, 8, 7).reshape(s.shape)


def _kraus(s: np.ndarray) -> np.ndarray:
    """(n, d^2, d^2) superops -> (n, d^2, d, d) Kraus operators from the Choi matrix's eigenvectors."""
    n, dd, _ = s.shape
    d = int(round(dd**0.5))
    choi = s.reshape(n, d, d, d, d).transpose(0, 1, 3, 2, 4).reshape(n, dd, dd)
    lam, vec = np.linalg.eigh(choi)
    lam = np.clip(lam, 0.0, None)  # round-off below zero of a completely positive map
    k = np.sqrt(lam)[:, None, :] * vec
    return k.transpose(0, 2, 1).reshape(n, dd, d, d)


# ----------------------------------------------------------------------------------------------------------
# the program: fused blocks of one circuit structure


@dataclass(frozen=True)
class _Op:
    name: str
    qubits: tuple[int, ...]  # local (active) indices
    physical: tuple[int, ...]
    index: int  # position in circuit.data


@dataclass(frozen=True)
class Program:
    """The structure every circuit of a PUB shares: active qubits, gates in order, measured clbits."""

    n_qubits: int
    ops: tuple[_Op, ...]
    measured: tuple[tuple[int, int, int], ...]  # (clbit, local qubit, physical qubit)
    n_clbits: int


def program(circuit: Any) -> Program:
    """The gate list of `circuit` on its active qubits; Unsupported when it is not gates then measurements."""
    active: dict[int, int] = {}
    ops, measured, done = [], [], set()
    for i, ci in enumerate(circuit.data):
        op = ci.operation
        phys = tuple(circuit.find_bit(q).index for q in ci.qubits)
        if op.name == "barrier":
            continue
        if getattr(op, "condition", None) is not None or op.name in ("reset", "delay") or op.num_clbits and op.name != "measure":
            raise Unsupported(f"instruction {op.name!r}")
        if any(p in done for p in phys):
            raise Unsupported("an operation after a measurement")
        local = tuple(active.setdefault(p, len(active)) for p in phys)
        if op.name == "measure":
            measured.append((circuit.find_bit(ci.clbits[0]).index, local[0], phys[0]))
            done.add(phys[0])
        elif len(phys) > 2:
            raise Unsupported(f"{len(phys)}-qubit gate {op.name!r}")
        else:
            ops.append(_Op(op.name, local, phys, i))
    return Program(len(active), tuple(ops), tuple(measured), circuit.num_clbits)


@dataclass
class _Block:
    qubits: tuple[int, ...]
    superop: np.ndarray  # (n, d^2, d^2)


_ROTATIONS = {  # vectorized matrices of the parameterized gates an IBM ISA holds (others are built one by one)
    "rz": lambda t: np.stack([np.stack([np.exp(-0.5j * t), 0 * t], -1), np.stack([0 * t, np.exp(0.5j * t)], -1)], -2),
    "rx": lambda t: np.stack([np.stack([np.cos(t / 2), -1j * np.sin(t / 2)], -1),
                              np.stack([-1j * np.sin(t / 2), np.cos(t / 2) + 0j], -1)], -2),
    "ry": lambda t: np.stack([np.stack([np.cos(t / 2) + 0j, -np.sin(t / 2) + 0j], -1),
                              np.stack([np.sin(t / 2) + 0j, np.cos(t / 2) + 0j], -1)], -2),
}


def _affine(expr: Any, params: list[Any]) -> tuple[float, np.ndarray]:
    """(offset, coefficients) of a parameter expression, checked to be affine in the circuit's parameters."""
    if not hasattr(expr, "parameters"):
        return float(expr), np.zeros(len(params))
    value = lambda v: float(expr.bind(dict(zip(params, v)), allow_unknown_parameters=True))  # noqa: E731
    zero = np.zeros(len(params))
    offset = value(zero)
    coef = np.array([value(np.eye(1, len(params), i)[0]) - offset if p in expr.parameters else 0.0
                     for i, p in enumerate(params)])
    probe = np.linspace(0.3, 1.7, len(params))
    if not np.isclose(value(probe), offset + coef @ probe, rtol=1e-9, atol=1e-9):
        raise Unsupported(f"non-affine parameter expression {expr}")
    return offset, coef


def _gate_matrices(op: Any, values: np.ndarray, params: list[Any]) -> np.ndarray:
    """(n, d, d) matrices of a gate (parameterized: one per row of `values`; else one, shape (1, d, d))."""
    if not any(hasattr(p, "parameters") for p in op.params):
        return np.asarray(op.to_matrix(), dtype=complex)[None]
    angles = [o + values @ c for o, c in (_affine(p, params) for p in op.params)]
    if op.name in _ROTATIONS and len(angles) == 1:
        return _ROTATIONS[op.name](angles[0])
    return np.stack([np.asarray(type(op)(*row).to_matrix(), dtype=complex) for row in np.stack(angles, -1)])


def _gate_superops(prog: Program, circuit: Any, values: np.ndarray, noise: NoiseTables) -> list[np.ndarray]:
    """Per op: the noisy channel (n, d^2, d^2) for each row of `values` (shape (1, ...) when unparameterized)."""
    params = list(circuit.parameters)
    out = []
    for op in prog.ops:
        k = len(op.qubits)
        s = _unitary_superop(_from_qiskit(_gate_matrices(circuit.data[op.index].operation, values, params), k, 2))
        err = noise.channel(op.name, op.physical)
        if err is not None:
            s = _noise_superop(err, k) @ s  # the error acts after the gate, as in Aer
        out.append(s)
    return out


def _blocks(prog: Program, superops: list[np.ndarray], n: int) -> list[_Block]:
    """Fuse one-qubit channels into the next two-qubit block on their qubit, and consecutive two-qubit
    channels on the same pair into one block; what is left before the measurement becomes one-qubit blocks."""
    eye1 = np.broadcast_to(np.eye(4, dtype=complex), (n, 4, 4))
    pending: dict[int, np.ndarray] = {}
    blocks: list[_Block] = []
    last: dict[int, int] = {}
    for op, s in zip(prog.ops, superops):
        if len(op.qubits) == 1:
            q = op.qubits[0]
            pending[q] = s @ pending.get(q, eye1)
            continue
        a, b = op.qubits
        pre = _tensor(pending.pop(a, eye1), pending.pop(b, eye1))
        j = last.get(a)
        if j is not None and j == last.get(b):
            blk = blocks[j]
            if blk.qubits == (b, a):
                s, pre = _swap_superop(s), _swap_superop(pre)
            blk.superop = s @ pre @ blk.superop
        else:
            blocks.append(_Block((a, b), s @ pre))
            last[a] = last[b] = len(blocks) - 1
    for q, s in pending.items():
        blocks.append(_Block((q,), np.broadcast_to(s, (n, 4, 4))))
    return blocks


# ----------------------------------------------------------------------------------------------------------
# sampling


def _front(psi: np.ndarray, order: list[int], qubits: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    """psi (R, 2^N) whose axes hold the qubits in `order`, with `qubits` moved to the front (copied only when
    they are not there already), and the new order."""
    k = len(qubits)
    if tuple(order[:k]) == qubits:
        return psi, order
    t = psi.reshape(-1, *(2,) * len(order))
    src = [1 + order.index(q) for q in qubits]
    t = np.moveaxis(t, src, list(range(1, 1 + k)))
    return np.ascontiguousarray(t).reshape(psi.shape), list(qubits) + [q for q in order if q not in qubits]


def _branch(psi, order, circ, count, kraus, povm, qubits, rng):
    """Apply one block's channel to every branch, splitting each branch's shots over the Kraus operators."""
    psi, order = _front(psi, order, qubits)
    d = 2 ** len(qubits)
    a = psi.reshape(len(psi), d, -1)
    rho_t = a.conj() @ a.transpose(0, 2, 1)  # the transposed reduced density matrix on the block's qubits
    p = (povm[circ] @ rho_t.reshape(len(a), d * d, 1))[..., 0].real  # <psi|K^+K|psi> per Kraus operator
    p = np.clip(p, 0.0, None)
    p /= p.sum(axis=1, keepdims=True)
    counts = rng.multinomial(count, p)
    ii, kk = np.nonzero(counts)
    ci = circ[ii]
    new = np.einsum("rab,rbm->ram", kraus[ci, kk] / np.sqrt(p[ii, kk])[:, None, None], a[ii])
    return new.reshape(len(ii), -1), order, ci, counts[ii, kk]


def _measure(psi, order, circ, count, prog: Program, n: int, shots: int, noise: NoiseTables, rng) -> np.ndarray:
    """Bits (n, shots, n_clbits): each branch's shots drawn from its |psi|^2, shuffled, then readout error."""
    nq = prog.n_qubits
    probs = (np.abs(psi) ** 2).reshape(-1, *(2,) * nq)
    keep = [1 + order.index(q) for _, q, _ in prog.measured]  # the measured qubits' axes
    rest = tuple(ax for ax in range(1, 1 + nq) if ax not in keep)
    marg = probs.sum(axis=rest) if rest else probs
    ranked = sorted(keep)
    marg = marg.transpose([0] + [1 + ranked.index(q) for q in keep]).reshape(len(psi), -1)  # measured order
    marg /= marg.sum(axis=1, keepdims=True)
    counts = rng.multinomial(count, marg)
    rr, oo = np.nonzero(counts)
    reps = counts[rr, oo]
    owner = np.repeat(circ[rr], reps)
    outcome = np.repeat(oo, reps)[np.argsort(owner, kind="stable")].reshape(n, shots)
    outcome = rng.permuted(outcome, axis=1)  # shots in no particular branch order
    nm = len(keep)
    bits = np.zeros((n, shots, prog.n_clbits), dtype=bool)
    for j, (clbit, _, _) in enumerate(prog.measured):
        bits[:, :, clbit] = (outcome >> (nm - 1 - j)) & 1
    for clbit, _, phys in prog.measured:
        p1 = noise.assignment(phys)[:, 1]  # P(measured 1 | true bit)
        u = rng.random((n, shots))
        bits[:, :, clbit] = u < p1[bits[:, :, clbit].astype(int)]
    return bits


def sample(circuit: Any, values: np.ndarray, shots: int, noise: NoiseTables, seed: int | None) -> np.ndarray:
    """Measured bits (n, shots, n_clbits) of `circuit` bound to each row of `values`, under `noise`."""
    prog = program(circuit)
    values = np.atleast_2d(np.asarray(values, dtype=float)) if circuit.num_parameters else np.zeros((1, 0))
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_STATE_BYTES // (16 * 2**prog.n_qubits * max(shots, 1)))
    out = []
    for lo in range(0, len(values), chunk):
        rows = values[lo: lo + chunk]
        n = len(rows)
        blocks = _blocks(prog, _gate_superops(prog, circuit, rows, noise), n)
        psi = np.zeros((n, 2**prog.n_qubits), dtype=complex)
        psi[:, 0] = 1.0
        circ, count = np.arange(n), np.full(n, shots, dtype=np.int64)
        order = list(range(prog.n_qubits))
        for blk in blocks:
            kraus = _kraus(np.broadcast_to(blk.superop, (n, *blk.superop.shape[1:])))
            d = kraus.shape[-1]
            povm = np.einsum("nkab,nkac->nkbc", kraus.conj(), kraus).reshape(n, -1, d * d)
            psi, order, circ, count = _branch(psi, order, circ, count, kraus, povm, blk.qubits, rng)
        out.append(_measure(psi, order, circ, count, prog, n, shots, noise, rng))
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------------------------
# a sampler primitive over `sample`


class LocalJob:
    """A finished local job: its id and result (the ledger treats it like a service job)."""

    def __init__(self, result: Any) -> None:
        import uuid

        self._id, self._result = f"local-{uuid.uuid4().hex[:16]}", result

    def job_id(self) -> str:
        return self._id

    def result(self) -> Any:
        return self._result

    def usage(self) -> None:  # a local simulation uses no QPU time
        return None


class NoisySampler:
    """A SamplerV2-style primitive for a device noise model: Aer's density matrix when 2^active qubits is
    at most max(shots, 256) (exact probabilities are then cheaper than trajectories), else `sample`."""

    def __init__(self, density_matrix: Any, shots: int, seed: int | None) -> None:
        self.simulator, self.default_shots, self.seed = density_matrix, shots, seed
        self.noise = noise_tables(density_matrix.options.noise_model)

    def run(self, pubs: list[Any], *, shots: int | None = None) -> LocalJob:
        from qiskit.primitives import BitArray, DataBin, PrimitiveResult, SamplerPub, SamplerPubResult
        from qiskit_aer.primitives import SamplerV2 as AerSampler

        out = []
        rng = np.random.default_rng(self.seed)
        for pub in (SamplerPub.coerce(p, shots or self.default_shots) for p in pubs):
            seed = int(rng.integers(2**31))
            try:
                prog = program(pub.circuit)
                dense = 2**prog.n_qubits <= max(pub.shots, 256)
            except Unsupported:
                dense = True
            if dense:
                aer = AerSampler.from_backend(self.simulator, seed=seed)
                out.append(aer.run([pub]).result()[0])
                continue
            values = pub.parameter_values.as_array(pub.circuit.parameters).reshape(-1, pub.circuit.num_parameters)
            bits = sample(pub.circuit, values, pub.shots, self.noise, seed)
            reg = pub.circuit.cregs[0].name
            ba = BitArray.from_bool_array(bits.reshape(*pub.shape, *bits.shape[1:]), order="little")
            out.append(SamplerPubResult(DataBin(**{reg: ba}, shape=pub.shape),
                                        metadata={"shots": pub.shots, "simulator": "trajectories"}))
        return LocalJob(PrimitiveResult(out, metadata={}))
