"""Any parametrised qiskit circuit as a batched, differentiable float64 torch statevector executor.

`compile_circuit` reads a `QuantumCircuit` whose parameters are elements of an input and a weight
`ParameterVector` (every gate angle linear in them) and returns a `CompiledCircuit`. It runs inputs
(B, n_in) and weights (n_w,), or (K, n_w) for K models at once, to statevectors or to expectations of
Pauli strings, with gradients by autograd. Qubit q is bit q of the basis index, as in qiskit.

How it runs: the qubits are split into a low and a high half and the state is kept as
(K, 2^n_hi, B, 2^n_lo). The instruction list is cut into stages. A stage is, per half, the tensor
product of every qubit's chain of single-qubit gates (one matrix product over all rows per half),
followed by one gather for the parameter-free permutation and phase gates (cx, swap, cz, x, ...)
that come after it. Every single-qubit gate is e^{i gamma} U3(theta, phi, lambda) with angles affine in
the parameters, so all gate matrices come from one matrix product and a few elementwise ops, and a
run of stages that do not depend on the inputs is one autograd node with a hand-written reverse
sweep. Two-qubit gates that mix amplitudes (crx, rxx, ecr, ...) close the stage and are applied on
their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterExpression, ParameterVector

from .shots import sample_counts
from .statevector import gather_states, kron, u3_from_cosines

COMPLEX = torch.complex128
PI = math.pi

# Single-qubit gates as e^{i gamma} U3(theta, phi, lambda), (theta, phi, lambda, gamma) = offset + matrix @ params.
_U3 = ((0, 0, 0, 0), ((1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)))
_PHASE = ((0, 0, 0, 0), ((0,), (0,), (1,), (0,)))
ROTATIONS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]] = {
    "u": _U3,
    "u3": _U3,
    "rx": ((0, -PI / 2, PI / 2, 0), ((1,), (0,), (0,), (0,))),
    "ry": ((0, 0, 0, 0), ((1,), (0,), (0,), (0,))),
    "rz": ((0, 0, 0, 0), ((0,), (0,), (1,), (-0.5,))),
    "p": _PHASE,
    "u1": _PHASE,
    "u2": ((PI / 2, 0, 0, 0), ((0, 0), (1, 0), (0, 1), (0, 0))),
}
FIXED_1Q: dict[str, tuple[float, float, float, float]] = {
    "id": (0, 0, 0, 0),
    "h": (PI / 2, 0, PI, 0),
    "x": (PI, 0, PI, 0),
    "y": (PI, PI / 2, PI / 2, 0),
    "z": (0, 0, PI, 0),
    "s": (0, 0, PI / 2, 0),
    "sdg": (0, 0, -PI / 2, 0),
    "t": (0, 0, PI / 4, 0),
    "tdg": (0, 0, -PI / 4, 0),
    "sx": (PI / 2, -PI / 2, PI / 2, PI / 4),
    "sxdg": (-PI / 2, -PI / 2, PI / 2, -PI / 4),
}
# Controlled rotations: the controlled block is the single-qubit gate of the same letters.
CONTROLLED = {"crx": "rx", "cry": "ry", "crz": "rz", "cp": "p", "cu1": "u1", "cu3": "u3"}
# exp(-i theta/2 P) with P = kron(letter 0 on the second qarg, letter 1 on the first qarg).
PAULI_ROTATIONS = {"rxx": "XX", "ryy": "YY", "rzz": "ZZ", "rzx": "XZ"}
FIXED_2Q = {"cx", "cy", "cz", "ch", "cs", "csdg", "csx", "swap", "iswap", "dcx", "ecr"}
IGNORED = {"barrier", "delay"}
SUPPORTED = sorted(set(ROTATIONS) | set(FIXED_1Q) | set(CONTROLLED) | set(PAULI_ROTATIONS) | FIXED_2Q)
# Parameter-shift terms per gate angle that depends on a differentiated parameter: generators with two
# eigenvalues (rotations, phases, cp and Pauli rotations such as rxx) take the two-term rule; the rotation
# angle of crx, cry, crz and cu3 has eigenvalues {0, +-1/2} and takes the four-term rule (cu3's phases
# are controlled phases: two terms).
FOUR_TERM = {"crx": (0,), "cry": (0,), "crz": (0,), "cu3": (0,)}
# (shift, weight) pairs: df/da = sum weight * f(a + shift).
TWO_TERM_RULE = ((PI / 2, 0.5), (-PI / 2, -0.5))
_D1, _D2 = (math.sqrt(2) + 1) / (4 * math.sqrt(2)), (math.sqrt(2) - 1) / (4 * math.sqrt(2))
FOUR_TERM_RULE = ((PI / 2, _D1), (-PI / 2, -_D1), (3 * PI / 2, -_D2), (-3 * PI / 2, _D2))
_PAULI = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
          "Z": np.diag([1.0, -1.0])}
# (theta, phi, lambda, gamma) -> the cosine arguments of U3's magnitudes (theta/2 + 0, +pi/2, -pi/2, 0:
# c, -s, s, c) and its four phases (gamma, gamma + lambda, gamma + phi, gamma + phi + lambda).
# A U3 entry is cos(a) exp(i b) = cos(a) (cos b, cos(b - pi/2)): one cosine of 12 affine rows per gate
# (the four a, then b and b - pi/2 for each entry) and one multiplication build it, and its backward.
_ENTRY_OFFSET = (0, PI / 2, -PI / 2, 0, 0, -PI / 2, 0, -PI / 2, 0, -PI / 2, 0, -PI / 2)
_ENTRY_MATRIX = ((.5, 0, 0, 0), (.5, 0, 0, 0), (.5, 0, 0, 0), (.5, 0, 0, 0),
                 (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 1, 1),
                 (0, 1, 0, 1), (0, 1, 0, 1), (0, 1, 1, 1), (0, 1, 1, 1))

Rows = list[tuple[float, dict]]  # affine rows: (offset, {("in" | "w", index): coefficient})


class CircuitError(ValueError):
    """A circuit the executor cannot take, or one that disagrees with qiskit; the message names the instruction."""


@dataclass(frozen=True)
class Affine:
    """Rows of values = const + a_in @ inputs + a_w @ weights (+ a_s @ shifts of the gate angles)."""

    const: torch.Tensor  # (rows,)
    a_in: torch.Tensor | None  # (n_in, rows), None when no row depends on the inputs
    a_w: torch.Tensor  # (n_w, rows)
    a_s: torch.Tensor  # (n_angles, rows): each parametrised gate angle's own shift

    def evaluate(self, inputs: torch.Tensor | None, weights: torch.Tensor,
                 shifts: torch.Tensor | None = None) -> torch.Tensor:
        """(K, R, rows); R is the batch when the rows depend on the inputs, else 1."""
        out = torch.addmm(self.const, weights, self.a_w)
        out = (out if shifts is None else out + shifts @ self.a_s)[:, None, :]
        if self.a_in is not None:
            out = out + inputs @ self.a_in
        return out


@dataclass
class _Stage:
    """Per-qubit gate chains (affine rows, input-dependent) followed by a permutation with phases."""

    chains: dict[int, list[tuple[Rows, bool]]] = field(default_factory=dict)
    perm: np.ndarray | None = None  # out[j] = phase[j] * in[perm[j]]
    phase: np.ndarray | None = None


@dataclass(frozen=True)
class _Group:
    """The chains of every stage-half of one size and width: U3 entry arguments (K, R, S*k*m*12)."""

    entries: Affine
    shape: tuple[int, int, int]  # (stages S, qubits k, chain length m)


@dataclass(frozen=True)
class _Step:
    kind: str  # "stage" | "two"
    lo: tuple[bool, int] | None = None  # (row, position among the stage-halves of its group)
    hi: tuple[bool, int] | None = None
    perm: int | None = None  # index into the permutation list
    two: tuple[bool, int, int, int] | None = None  # (row, table index, qubit a, qubit b)


@dataclass
class _TwoTable:
    """Two-qubit gate matrices of one width, in segments built in one go each: ctrl (4 angle rows
    each), pauli per letter pair (1 row), constants."""

    entries: list = field(default_factory=list)  # (segment key, rows, constant matrix or None)

    def add(self, key: tuple, rows: Rows, const: np.ndarray | None = None) -> int:
        self.entries.append((key, rows, const))
        return len(self.entries) - 1

    def order(self) -> tuple[dict[int, int], list[tuple], Rows]:
        """(entry -> position, segments [(key, count, constants)], angle rows in position order)."""
        ids = sorted(range(len(self.entries)), key=lambda i: self.entries[i][0])
        segments: list = []
        rows: Rows = []
        for i in ids:
            key, r, const = self.entries[i]
            rows.extend(r)
            if segments and segments[-1][0] == key:
                segments[-1][1] += 1
                segments[-1][2].append(const)
            else:
                segments.append([key, 1, [const]])
        segs = [(k, n, torch.as_tensor(np.stack(c)) if k[0] == "const" else None) for k, n, c in segments]
        return {i: n for n, i in enumerate(ids)}, segs, rows


def _where(i: int, name: str, qubits: Sequence[int]) -> str:
    return f"instruction {i} ({name} on qubit{'s' if len(qubits) > 1 else ''} {', '.join(map(str, qubits))})"


def _linear(value, keys: dict, where: str) -> tuple[float, dict]:
    """A gate parameter -> (offset, {(kind, index): coefficient}); non-linear expressions are refused."""
    if not isinstance(value, ParameterExpression):
        return float(value), {}
    coeffs = {}
    for p in value.parameters:
        if p not in keys:
            raise CircuitError(f"{where}: parameter {p.name} belongs to neither the input nor the weight vector")
        g = value.gradient(p)
        if getattr(g, "parameters", None):
            raise CircuitError(f"{where}: angle {value} is not linear in the parameters; "
                               "only constants times parameters plus a constant are supported")
        coeffs[keys[p]] = float(complex(g).real)
    const = complex(value.bind({p: 0.0 for p in value.parameters}) if value.parameters else value)
    return const.real, coeffs


def _combine(offset, matrix, params: Rows) -> Rows:
    """offset + matrix @ params, each param affine."""
    rows = []
    for r, off in enumerate(offset):
        const, coeffs = float(off), {}
        for j, (c, cf) in enumerate(params):
            m = float(matrix[r][j])
            if m:
                const += m * c
                for key, v in cf.items():
                    coeffs[key] = coeffs.get(key, 0.0) + m * v
        rows.append((const, coeffs))
    return rows


def _monomial(m: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(source, phase) with m[j, source[j]] = phase[j] when m is a permutation with phases."""
    nz = np.abs(m) > 1e-12
    if not (nz.sum(0) == 1).all() or not (nz.sum(1) == 1).all():
        return None
    src = nz.argmax(1)
    return src, m[np.arange(len(m)), src]


def _full_permutation(n: int, qubits: Sequence[int], src: np.ndarray, phase: np.ndarray):
    """A monomial gate on `qubits` (qubits[0] the least significant local bit) on all 2^n indices."""
    j = np.arange(2**n)
    local = sum(((j >> q) & 1) << i for i, q in enumerate(qubits))
    s_local = src[local]
    out = j.copy()
    for i, q in enumerate(qubits):
        out = (out & ~(1 << q)) | (((s_local >> i) & 1) << q)
    return out, phase[local].astype(np.complex128)


class CompiledCircuit:
    """A circuit compiled for batched float64 torch execution (see the module docstring)."""

    def __init__(self, circuit: QuantumCircuit, inputs, weights, observables: Sequence[str] | None = None):
        self.circuit = circuit
        self.n_qubits = circuit.num_qubits
        self.n_hi = self.n_qubits // 2
        self.n_lo = self.n_qubits - self.n_hi
        self.input_vector, self.weight_vector = _vector(circuit, inputs, "inputs"), _vector(circuit, weights, "weights")
        self.input_name, self.n_inputs = self.input_vector or (None, 0)
        self.weight_name, self.n_weights = self.weight_vector or (None, 0)
        keys = {}
        for p in circuit.parameters:
            vec = getattr(p, "vector", None)
            if vec is not None and vec.name == self.input_name:
                keys[p] = ("in", p.index)
            elif vec is not None and vec.name == self.weight_name:
                keys[p] = ("w", p.index)
        self.observables = tuple(observables) if observables else tuple(
            "I" * (self.n_qubits - 1 - j) + "Z" + "I" * j for j in range(self.n_qubits))
        for label in self.observables:
            if len(label) != self.n_qubits or set(label) - set("IXYZ"):
                raise CircuitError(f"observable {label!r}: need a Pauli string of {self.n_qubits} letters "
                                   "from I, X, Y, Z (rightmost letter is qubit 0)")
        self.terms = {"in": 0, "w": 0}  # parameter-shift terms per sample, by what the angles depend on
        self._angles: list[tuple[dict, int]] = []  # per parametrised gate angle: (coefficients, shift terms)
        self._compile(circuit, keys)
        self._phase = self._affine([_linear(circuit.global_phase, keys, "the circuit's global phase")])
        self._has_phase = bool(self._phase.const[0]) or bool(self._phase.a_w.any()) or self._phase.a_in is not None
        self._diagonal = all(set(label) <= {"I", "Z"} for label in self.observables)
        self._gathers: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._signs: dict[int | None, torch.Tensor] = {}

    # ---- compilation -------------------------------------------------------------------------------
    def _compile(self, circuit: QuantumCircuit, keys: dict) -> None:
        twos = {r: _TwoTable() for r in (False, True)}
        stages: list = []  # _Stage or ("two", row, entry, a, b)
        cur = _Stage()
        for i, inst in enumerate(circuit.data):
            op, name = inst.operation, inst.operation.name
            qubits = [circuit.find_bit(q).index for q in inst.qubits]
            where = _where(i, name, qubits)
            if name in IGNORED:
                continue
            if name not in SUPPORTED:
                raise CircuitError(_unsupported(where, name))
            params = [self._angle(_linear(v, keys, where), name, j) for j, v in enumerate(op.params)]
            depends = {key[0] for _, cf in params for key in cf if key[0] != "s"}
            row = "in" in depends
            mono = None if depends else _monomial(np.asarray(op.to_matrix(), dtype=np.complex128))
            if mono is not None and (len(qubits) == 2 or cur.perm is not None):
                self._compose(cur, qubits, *mono)
                continue
            if len(qubits) == 1:
                if cur.perm is not None:
                    stages.append(cur)
                    cur = _Stage()
                off, mat = ROTATIONS[name] if name in ROTATIONS else (FIXED_1Q[name], ((),) * 4)
                cur.chains.setdefault(qubits[0], []).append((_combine(off, mat, params), row))
                continue
            if cur.chains or cur.perm is not None:
                stages.append(cur)
                cur = _Stage()
            table = twos[row]
            if not depends:
                idx = table.add(("const",), [], np.asarray(op.to_matrix(), dtype=np.complex128))
            elif name in CONTROLLED:
                off, mat = ROTATIONS[CONTROLLED[name]]
                idx = table.add(("ctrl",), _combine(off, mat, params))
            else:
                idx = table.add(("pauli", PAULI_ROTATIONS[name]), _combine((0,), ((1,),), params))
            stages.append(("two", row, idx, qubits[0], qubits[1]))
        if cur.chains or cur.perm is not None:
            stages.append(cur)
        self._build(twos, stages)

    def _angle(self, value: tuple[float, dict], name: str, j: int) -> tuple[float, dict]:
        """Count a parametrised gate angle's shift terms and give it its own shift variable."""
        const, cf = value
        if not cf:
            return value
        terms = 4 if j in FOUR_TERM.get(name, ()) else 2
        for kind in {k[0] for k in cf}:
            self.terms[kind] += terms
        self._angles.append((cf, terms))
        return const, {**cf, ("s", len(self._angles) - 1): 1.0}

    def _compose(self, cur: _Stage, qubits: list[int], src: np.ndarray, phase: np.ndarray) -> None:
        g2, ph2 = _full_permutation(self.n_qubits, qubits, src, phase)
        if cur.perm is None:
            cur.perm, cur.phase = g2, ph2
        else:  # out[j] = ph2[j] * mid[g2[j]] with mid[i] = ph[i] * in[g[i]]
            cur.perm, cur.phase = cur.perm[g2], ph2 * cur.phase[g2]

    def _affine(self, rows: Rows) -> Affine:
        const = np.array([c for c, _ in rows], dtype=np.float64)
        a_in = np.zeros((self.n_inputs, len(rows)))
        a_w = np.zeros((self.n_weights, len(rows)))
        a_s = np.zeros((len(self._angles), len(rows)))
        for r, (_, cf) in enumerate(rows):
            for (kind, idx), v in cf.items():
                {"in": a_in, "w": a_w, "s": a_s}[kind][idx, r] += v
        return Affine(torch.as_tensor(const), torch.as_tensor(a_in) if a_in.any() else None, torch.as_tensor(a_w),
                      torch.as_tensor(a_s))

    def _build(self, twos: dict, stages: list) -> None:
        self._twos, pos = {}, {}
        for row, t in twos.items():
            pos[row], segments, rows = t.order()
            self._twos[row] = (segments, self._affine(rows))
        halves = {"lo": list(range(self.n_lo - 1, -1, -1)), "hi": list(range(self.n_qubits - 1, self.n_lo - 1, -1))}
        chains: dict[tuple[int, bool], list] = {}
        self._perms: list[tuple[np.ndarray, torch.Tensor | None]] = []
        steps = []
        for st in stages:
            if isinstance(st, tuple):
                _, row, idx, a, b = st
                steps.append(_Step("two", two=(row, pos[row][idx], a, b)))
                continue
            refs = {}
            for half, qs in halves.items():
                links = [st.chains.get(q, []) for q in qs]
                if not any(links):
                    refs[half] = None
                    continue
                row = any(r for link in links for _, r in link)
                group = chains.setdefault((len(qs), row), [])
                group.append(links)
                refs[half] = (row, len(group) - 1)
            perm = None
            if st.perm is not None:
                phase = None if (st.phase == 1).all() else torch.as_tensor(st.phase)
                self._perms.append((st.perm, phase))
                perm = len(self._perms) - 1
            steps.append(_Step("stage", lo=refs["lo"], hi=refs["hi"], perm=perm))
        self._steps = steps
        self._groups = {key: self._group(links) for key, links in chains.items()}

    def _group(self, stages: list) -> _Group:
        """Entry arguments of every chain slot, the identity (all-zero rows) where a chain is shorter."""
        m = max(len(link) for links in stages for link in links)
        identity = [(0.0, {})] * 4
        rows: Rows = []
        for links in stages:
            for link in links:
                for p in range(m):
                    rows.extend(_combine(_ENTRY_OFFSET, _ENTRY_MATRIX, link[p][0] if p < len(link) else identity))
        return _Group(self._affine(rows), (len(stages), len(stages[0]), m))

    # ---- execution ---------------------------------------------------------------------------------
    def statevector(self, inputs: torch.Tensor | None, weights: torch.Tensor,
                    initial_state: torch.Tensor | None = None, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Final states (B, 2^n), or (K, B, 2^n) for weights (K, n_w); `initial_state` (B, 2^n) replaces |0>.

        `shifts` (K, n_angles) moves every parametrised gate angle by its own amount (parameter shift)."""
        x, inputs, w, single, _ = self._run(inputs, weights, initial_state, shifts)
        k, _, rows, _ = x.shape
        out = x.transpose(1, 2).reshape(k, rows, -1)
        if self._has_phase:
            gp = self._phase.evaluate(inputs, w)  # (K, R, 1)
            out = out * torch.complex(torch.cos(gp), torch.sin(gp))
        return out[0] if single else out

    def _run(self, inputs, weights, initial_state, shifts=None, last_perm: bool = True):
        """States (K, hi, B, lo) before the global phase, inputs, weights, single model?, and the index of the
        final permutation when `last_perm` is False and the circuit ends in one (left unapplied), else None."""
        x, inputs, w, single = self._prepare(inputs, weights, initial_state, shifts)
        rows = x.shape[2]
        units = self._unitaries(inputs, w, shifts)
        twos = {r: self._two_matrices(inputs, w, r, shifts) for r in (False, True)}
        sweep: list = []  # a run of input-independent stage operations, swept as one autograd node
        tensors: list[torch.Tensor] = []
        for step in self._steps:
            if step.kind == "two" or (step.lo and step.lo[0]) or (step.hi and step.hi[0]):
                x = _Sweep.apply(x, sweep, *tensors) if sweep else x
                sweep, tensors = [], []
            if step.kind == "two":
                row, idx, a, b = step.two
                x = self._apply_two(x, twos[row][:, :, idx], a, b)
                continue
            for half, ref in (("lo", step.lo), ("hi", step.hi)):
                if ref is None:
                    continue
                u = units[self.n_lo if half == "lo" else self.n_hi, ref[0]][ref[1]]
                if ref[0]:
                    x = _apply_row(x, u, low=half == "lo")
                else:
                    sweep.append((half, len(tensors)))
                    tensors.append(u)
            if step.perm is not None:
                idx, inv = self._gather(step.perm, rows)
                sweep.append(("perm", idx, inv, self._perms[step.perm][1], step.perm))
        final = None
        if not last_perm and sweep and sweep[-1][0] == "perm":
            final = sweep.pop()[-1]
        x = _Sweep.apply(x, sweep, *tensors) if sweep else x
        return x, inputs, w, single, final

    def _diagonal_expectations(self, inputs, weights, initial_state) -> torch.Tensor:
        """Exact <P> when every observable is a string of I and Z: a final permutation moves probabilities
        between basis states, so it is folded into the signs instead of gathered; its phases and the global
        phase, of modulus 1, drop out of the probabilities."""
        x, _, _, single, final = self._run(inputs, weights, initial_state, last_perm=False)
        if final not in self._signs:
            signs = _diagonal_signs(self.observables, self.n_qubits, doubled=True)
            if final is not None:  # out[j] = phase * in[g[j]]: in[i] lands on out[argsort(g)[i]]
                signs = signs.view(-1, 2, len(self.observables))[np.argsort(self._perms[final][0])].flatten(0, 1)
            self._signs[final] = signs
        k, _, rows, _ = x.shape
        squares = torch.view_as_real(x.transpose(1, 2).reshape(k, rows, -1)).square().flatten(-2)
        z = squares @ self._signs[final]
        return z[0] if single else z

    def _prepare(self, inputs, weights, initial_state, shifts=None):
        """States in the (K, hi, B, lo) layout, inputs (K | 1, B, n_in), weights (K, n_w), single model?"""
        w = torch.as_tensor(weights, dtype=torch.float64)
        single = w.dim() == 1
        w = w[None] if single else w
        if w.shape[-1] != self.n_weights:
            raise ValueError(f"weights have {w.shape[-1]} entries; the circuit's weight vector has {self.n_weights}")
        if inputs is None and self.n_inputs:
            raise ValueError(f"the circuit takes {self.n_inputs} inputs ({self.input_name}); pass them")
        if inputs is not None:
            inputs = torch.as_tensor(inputs, dtype=torch.float64)
            inputs = inputs if inputs.dim() == 3 else inputs[None]
            if inputs.shape[-1] != self.n_inputs:
                raise ValueError(f"inputs have {inputs.shape[-1]} columns; the circuit's input vector has "
                                 f"{self.n_inputs}")
        if initial_state is None:
            psi = torch.zeros(1, 1 if inputs is None else inputs.shape[-2], 2**self.n_qubits, dtype=COMPLEX)
            psi[..., 0] = 1
        else:
            psi = initial_state if initial_state.dim() == 3 else initial_state[None]
        x = psi.reshape(psi.shape[0], psi.shape[1], 2**self.n_hi, 2**self.n_lo).transpose(1, 2)
        k = max(w.shape[0], psi.shape[0], 1 if inputs is None else inputs.shape[0], 1 if shifts is None else len(shifts))
        # One copy: to the layout, complex, and to every model at once (`to` returns complex states as they are).
        x = x.expand(k, *x.shape[1:])
        x = x.contiguous() if x.dtype == COMPLEX else x.to(COMPLEX, memory_format=torch.contiguous_format)
        return x, inputs, w, single

    def _unitaries(self, inputs, weights, shifts=None) -> dict:
        """(half size, row) -> per stage-half, the unitary: (d, d) for one model, (K, d, d), or per row (K, B, d, d)."""
        out = {}
        for (size, row), group in self._groups.items():
            s, k, m = group.shape
            cosines = torch.cos(group.entries.evaluate(inputs, weights, shifts))
            gates = u3_from_cosines(cosines.unflatten(-1, (s, k, m, 12)))
            chain = gates.unbind(-3)
            prod = chain[0]
            for gate in chain[1:]:
                prod = gate @ prod
            while prod.shape[-3] > 1 and prod.shape[-3] % 2 == 0:  # pairs of neighbours, one product a level
                prod = kron(prod[..., 0::2, :, :], prod[..., 1::2, :, :])
            factors = prod.unbind(-3)
            u = factors[0]
            for factor in factors[1:]:
                u = kron(u, factor)
            # One unbind per group: its backward is one stack, where indexing per stage would zero-fill each.
            out[size, row] = u.unbind(2) if row else (u.flatten(0, 2) if u.shape[0] == 1 else u[:, 0]).unbind(-3)
        return out

    def _two_matrices(self, inputs, weights, row: bool, shifts=None) -> torch.Tensor | None:
        """(K, R, G, 4, 4) two-qubit gate matrices of one width, one batched construction per segment."""
        segments, affine = self._twos[row]
        if not segments:
            return None
        angles = affine.evaluate(inputs, weights, shifts)
        lead, out, a = angles.shape[:2], [], 0
        for key, count, const in segments:
            if key[0] == "const":
                out.append(const.expand(*lead, *const.shape))
                continue
            width = 1 if key[0] == "pauli" else 4
            ang = angles[..., a: a + width * count].unflatten(-1, (count, width))
            a += width * count
            out.append(_pauli_rotation(ang[..., 0], key[1]) if key[0] == "pauli" else _controlled(_u3(ang)))
        return torch.cat(out, 2)

    def _gather(self, perm: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat gather indices of a permutation on the (hi, rows, lo) layout, and their inverse."""
        key = (perm, rows)
        if key not in self._gathers:
            g = torch.as_tensor(self._perms[perm][0])
            d_lo = 2**self.n_lo
            src = (g // d_lo) * (rows * d_lo) + torch.arange(rows)[:, None] * d_lo + g % d_lo  # out[n, j]
            idx = src.reshape(rows, -1, d_lo).transpose(0, 1).reshape(-1)
            self._gathers[key] = (idx, torch.argsort(idx))
        return self._gathers[key]

    def _apply_two(self, x: torch.Tensor, m: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """A 4x4 gate (K, R, 4, 4), local index bit_a + 2 bit_b, on the (K, hi, B, lo) layout."""
        k, d_hi, rows, d_lo = x.shape
        shape = [k] + [2] * self.n_hi + [rows] + [2] * self.n_lo
        axis = {q: 1 + (self.n_qubits - 1 - q) for q in range(self.n_lo, self.n_qubits)}
        axis.update({q: 2 + self.n_hi + (self.n_lo - 1 - q) for q in range(self.n_lo)})
        names = ["A"] + list("abcdefghijklmnopqrstuvwxyz"[: len(shape) - 1])
        out = list(names)
        out[axis[a]], out[axis[b]] = "Y", "Z"
        g = m.reshape(m.shape[0], m.shape[1], 2, 2, 2, 2)  # (K, R, b_out, a_out, b_in, a_in)
        batch = names[1 + self.n_hi] if m.shape[1] > 1 else ""
        g = g if batch else g[:, 0]
        spec = f"A{batch}ZY{names[axis[b]]}{names[axis[a]]},{''.join(names)}->{''.join(out)}"
        return torch.einsum(spec, g, x.reshape(shape)).reshape(k, d_hi, rows, d_lo)

    def expectations(self, inputs: torch.Tensor | None, weights: torch.Tensor,
                     initial_state: torch.Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """<P> for each observable: (B, n_obs), or (K, B, n_obs) for weights (K, n_w).

        With `shots`, every measurement setting is one circuit of S shots: one computational-basis
        measurement estimates all I/Z strings (multinomial counts from the exact probabilities), and
        each string with X or Y is measured in its own basis (a binomial draw of its +-1 outcomes).
        Gradients at finite shots are the parameter-shift rule's, every shifted circuit estimated with
        S shots, all in one batched call (`shift_gradients`).
        """
        if shots is None and self._diagonal:
            return self._diagonal_expectations(inputs, weights, initial_state)
        if shots is None:
            return _pauli_expectations(self.statevector(inputs, weights, initial_state), self.observables)
        if generator is None:
            raise ValueError("shots need a seeded torch.Generator")
        grads = [t is not None and torch.is_tensor(t) and t.requires_grad for t in (inputs, weights, initial_state)]
        if torch.is_grad_enabled() and any(grads):
            if grads[2] or torch.as_tensor(weights).dim() != 1:
                raise ValueError("finite-shot gradients need one model's weights (n_w,) and no initial-state gradient")
            return _ShotExpectation.apply(inputs, weights, initial_state, self, shots, generator)
        return self.estimate(inputs, weights, initial_state, shots, generator)

    def estimate(self, inputs, weights, initial_state, shots: int, generator: torch.Generator,
                 shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Shot estimates without gradient (see `expectations`)."""
        with torch.no_grad():
            psi = self.statevector(inputs, weights, initial_state, shifts)
            return self._sample(psi, _pauli_expectations(psi, self.observables), shots, generator)

    def shift_gradients(self, inputs, weights, initial_state, grad_z: torch.Tensor, shots: int | None,
                        generator: torch.Generator | None, weight_grad: bool, input_grad: bool):
        """(d loss/d weights, d loss/d inputs) from the parameter-shift circuits, each estimated with `shots`.

        Every gate angle that depends on a differentiated parameter is shifted on its own (two or four
        terms); the chain rule through the angle's linear expression gives each parameter's share."""
        picked = [(o, cf, terms) for o, (cf, terms) in enumerate(self._angles)
                  if any((k[0] == "w" and weight_grad) or (k[0] == "in" and input_grad) for k in cf)]
        rules = [(n, o, shift, c) for n, (o, _, terms) in enumerate(picked)
                 for shift, c in (TWO_TERM_RULE if terms == 2 else FOUR_TERM_RULE)]
        shifts = torch.zeros(len(rules), len(self._angles), dtype=torch.float64)
        combine = torch.zeros(len(rules), len(picked), dtype=torch.float64)
        for r, (n, o, shift, c) in enumerate(rules):
            shifts[r, o], combine[r, n] = shift, c
        w = torch.as_tensor(weights, dtype=torch.float64).detach()
        x, w = None if inputs is None else inputs.detach(), w[None].expand(len(rules), -1)
        if shots is None:  # exact shifted circuits: checks the rule itself
            with torch.no_grad():
                z = _pauli_expectations(self.statevector(x, w, initial_state, shifts), self.observables)
        else:
            z = self.estimate(x, w, initial_state, shots, generator, shifts)  # (runs, B, n_obs)
        per_angle = torch.einsum("rbj,ro,bj->bo", z, combine, grad_z)  # d loss/d angle, per sample
        coef = {kind: torch.zeros(len(picked), size, dtype=torch.float64)
                for kind, size in (("w", self.n_weights), ("in", self.n_inputs))}
        for n, (_, cf, _) in enumerate(picked):
            for (kind, idx), v in cf.items():
                coef[kind][n, idx] += v
        g_w = per_angle.sum(0) @ coef["w"] if weight_grad else None
        g_in = per_angle @ coef["in"] if input_grad else None
        return g_w, g_in

    def _sample(self, psi, exact, shots, generator) -> torch.Tensor:
        out = exact.detach().clone()
        diag = [j for j, o in enumerate(self.observables) if set(o) <= {"I", "Z"}]
        if diag:
            probs = torch.view_as_real(psi).square().sum(-1).reshape(-1, psi.shape[-1])
            counts = sample_counts(probs, shots, generator)
            signs = _diagonal_signs(tuple(self.observables[j] for j in diag), self.n_qubits)
            out[..., diag] = (counts @ signs / shots).reshape(*out.shape[:-1], len(diag))
        for j, o in enumerate(self.observables):
            if j not in diag:
                p = ((1 + exact[..., j].detach()) / 2).clamp(0, 1)
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                ones = np.random.default_rng(seed).binomial(shots, p.numpy())
                out[..., j] = torch.as_tensor(2 * ones / shots - 1, dtype=out.dtype)
        return out

    def settings(self) -> int:
        """Measurement settings (circuits) per sample: one for all I/Z strings, one per other string."""
        diag = sum(set(o) <= {"I", "Z"} for o in self.observables)
        return (1 if diag else 0) + len(self.observables) - diag

    def device_circuits(self, rows: int, weight_grad: bool = False, input_grad: bool = False) -> int:
        """Circuits a device runs for `rows` samples: the forward pass and, for gradients, every
        parameter-shift term of every gate angle that depends on a differentiated parameter."""
        terms = (self.terms["w"] if weight_grad else 0) + (self.terms["in"] if input_grad else 0)
        return rows * self.settings() * (1 + terms)


def _vector(circuit: QuantumCircuit, spec, what: str) -> tuple[str, int] | None:
    """(name, length) of the named ParameterVector, checked against the circuit's parameters."""
    if spec is None:
        return None
    if isinstance(spec, tuple):  # (name, length) from a compiled circuit, for its prefixes
        return spec
    name = spec.name if isinstance(spec, ParameterVector) else str(spec)
    lengths = {len(p.vector) for p in circuit.parameters if getattr(p, "vector", None) is not None
               and p.vector.name == name}
    if isinstance(spec, ParameterVector):
        lengths.add(len(spec))
    if not lengths:
        found = sorted({getattr(p, "vector", p).name for p in circuit.parameters})
        raise CircuitError(f"{what}: the circuit has no parameter vector named {name!r} "
                           f"(its parameters come from: {', '.join(found) or 'none'})")
    return name, max(lengths)


def _unsupported(where: str, name: str) -> str:
    if name == "measure":
        why = "measurements are added by the executor; remove them from the circuit"
    elif name == "reset":
        why = "mid-circuit resets are not supported"
    elif name in {"if_else", "while_loop", "for_loop", "switch_case", "box"}:
        why = "classically controlled and mid-circuit operations are not supported"
    else:
        why = f"transpile the circuit to the supported gates ({', '.join(SUPPORTED)})"
    return f"{where}: unsupported instruction; {why}"


def _apply_half(x: torch.Tensor, u: torch.Tensor, low: bool) -> torch.Tensor:
    """A half's shared unitary on states (K, hi, B, lo): u is (d, d) or (K, d, d); one matrix product
    over every row."""
    k, d_hi, rows, d_lo = x.shape
    if u.dim() == 2 and k == 1:
        y = x.reshape(-1, d_lo) @ u.T if low else u @ x.reshape(d_hi, -1)
    else:
        y = x.reshape(k, -1, d_lo) @ u.mT if low else u @ x.reshape(k, d_hi, -1)
    return y.reshape(k, d_hi, rows, d_lo)


def _apply_row(x: torch.Tensor, u: torch.Tensor, low: bool) -> torch.Tensor:
    """A half's per-row unitaries (K, B, d, d) on states (K, hi, B, lo)."""
    return torch.einsum("kbml,khbl->khbm" if low else "kbmh,khbl->kmbl", u, x)


def _half_grads(x: torch.Tensor, g: torch.Tensor, u: torch.Tensor, low: bool, need_x: bool = True):
    """Gradients of y = _apply_half(x, u) with respect to x (None unless `need_x`) and u, given g = d loss / d y."""
    k, d_hi, rows, d_lo = x.shape
    gx = _apply_half(g, u.mH, low) if need_x else None
    lead = () if u.dim() == 2 and k == 1 else (k,)  # plain matrix products for one model
    if low:  # g^T conj(x), as the conjugate of g^dagger x: the products read conjugated views in place
        gu = (g.reshape(*lead, -1, d_lo).mH @ x.reshape(*lead, -1, d_lo)).conj().resolve_conj()
    else:
        gu = g.reshape(*lead, d_hi, -1) @ x.reshape(*lead, d_hi, -1).mH
    return gx, (gu.sum(0) if gu.dim() > u.dim() else gu)


class _Sweep(torch.autograd.Function):
    """A run of input-independent stage operations on states (K, hi, B, lo), as one autograd node.

    ops: ("lo" | "hi", index of the unitary in *units) or ("perm", gather, inverse gather, phase or
    None, the permutation's index). Autograd through the run records about ten small nodes per stage,
    which cost more than the arithmetic at training batch sizes; the reverse sweep here is three
    products per half and one gather per permutation.
    """

    @staticmethod
    def forward(ctx, x, ops, *units):
        saved = []
        for op in ops:
            if op[0] == "perm":
                _, idx, _, phase, _ = op
                x = gather_states(x, idx)
                x = x if phase is None else x * phase.reshape(x.shape[1], 1, x.shape[3])
            else:
                saved.append(x)
                x = _apply_half(x, units[op[1]], op[0] == "lo")
        ctx.ops, ctx.states = ops, saved
        ctx.save_for_backward(*units)
        return x

    @staticmethod
    def backward(ctx, g):
        units = ctx.saved_tensors
        grads: list = [None] * len(units)
        states = list(ctx.states)  # a copy: a retained graph may run this backward again
        # Without an input gradient the reverse sweep stops at the first unitary's gradient.
        first = next(i for i, op in enumerate(ctx.ops) if op[0] != "perm") if units else len(ctx.ops)
        need_input = ctx.needs_input_grad[0]
        stop = 0 if need_input else first
        for i in range(len(ctx.ops) - 1, stop - 1, -1):
            op = ctx.ops[i]
            if op[0] == "perm":
                _, _, inv, phase, _ = op
                g = g if phase is None else g * phase.conj().reshape(g.shape[1], 1, g.shape[3])
                g = gather_states(g, inv)
            else:
                need_x = need_input or i > stop
                g, grads[op[1]] = _half_grads(states.pop(), g, units[op[1]], op[0] == "lo", need_x)
        return (g if need_input else None, None, *grads)


class _ShotExpectation(torch.autograd.Function):
    """Shot estimates forward; the parameter-shift circuits, each with S shots, backward."""

    @staticmethod
    def forward(ctx, inputs, weights, initial_state, circuit, shots, generator):
        ctx.cfg = (inputs, weights, initial_state, circuit, shots, generator)
        return circuit.estimate(inputs, weights, initial_state, shots, generator)

    @staticmethod
    def backward(ctx, grad_z):
        inputs, weights, initial_state, circuit, shots, generator = ctx.cfg
        g_w, g_in = circuit.shift_gradients(inputs, weights, initial_state, grad_z, shots, generator,
                                            ctx.needs_input_grad[1], ctx.needs_input_grad[0])
        return g_in, g_w, None, None, None, None


def _u3(angles: torch.Tensor) -> torch.Tensor:
    """(..., 4) angles (theta, phi, lambda, gamma) -> (..., 2, 2) e^{i gamma} U3(theta, phi, lambda)."""
    theta, phi, lam, gamma = angles.unbind(-1)
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    mag = torch.stack([c, -s, s, c], -1)
    arg = torch.stack([gamma, gamma + lam, gamma + phi, gamma + phi + lam], -1)
    # Not torch.polar: its backward assumes a non-negative magnitude.
    return torch.complex(mag * torch.cos(arg), mag * torch.sin(arg)).unflatten(-1, (2, 2))


def _controlled(u: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) -> (..., 4, 4) controlled on the first qarg (local bit 0), target the second."""
    out = torch.zeros(*u.shape[:-2], 4, 4, dtype=u.dtype)
    out[..., 0, 0] = out[..., 2, 2] = 1
    view = out.unflatten(-2, (2, 2)).unflatten(-1, (2, 2))  # (..., t_out, c_out, t_in, c_in)
    view[..., :, 1, :, 1] = u
    return out


def _pauli_rotation(theta: torch.Tensor, pauli: str) -> torch.Tensor:
    """(...) angles -> (..., 4, 4) exp(-i theta/2 P), P = kron(letter 0 on the second qarg, letter 1 on the first)."""
    p = torch.as_tensor(np.kron(_PAULI[pauli[0]], _PAULI[pauli[1]]), dtype=COMPLEX)
    c, s = torch.cos(theta / 2)[..., None, None], torch.sin(theta / 2)[..., None, None]
    return c * torch.eye(4, dtype=COMPLEX) - 1j * s * p


@lru_cache(maxsize=64)
def _diagonal_signs(labels: tuple[str, ...], n: int, doubled: bool = False) -> torch.Tensor:
    """(2^n, len) eigenvalues of I/Z strings on every basis state; `doubled`: each row twice, (2^(n+1), len)."""
    masks = torch.tensor([sum(1 << q for q in range(n) if label[n - 1 - q] == "Z") for label in labels])
    signs = 1.0 - 2.0 * (_popcount(torch.arange(2**n)[:, None] & masks) & 1).to(torch.float64)
    return signs.repeat_interleave(2, 0) if doubled else signs


def _popcount(v: torch.Tensor) -> torch.Tensor:
    count = torch.zeros_like(v)
    while bool(v.any()):
        count, v = count + (v & 1), v >> 1
    return count


def _pauli_expectations(psi: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """<psi|P|psi> for Pauli strings (rightmost letter qubit 0): (..., 2^n) -> (..., len)."""
    n = int(round(math.log2(psi.shape[-1])))
    diag = [j for j, o in enumerate(labels) if set(o) <= {"I", "Z"}]
    squares = torch.view_as_real(psi).square()
    if len(diag) == len(labels):  # the squared real and imaginary parts against doubled signs: no sum over pairs
        return squares.flatten(-2) @ _diagonal_signs(tuple(labels), n, doubled=True)
    probs = squares.sum(-1)
    cols: list[torch.Tensor | None] = [None] * len(labels)
    if diag:
        z = probs @ _diagonal_signs(tuple(labels[j] for j in diag), n)
        for c, j in enumerate(diag):
            cols[j] = z[..., c]
    b = np.arange(2**n)
    for j, label in enumerate(labels):
        if cols[j] is not None:
            continue
        xm = sum(1 << q for q in range(n) if label[n - 1 - q] in "XY")
        zm = sum(1 << q for q in range(n) if label[n - 1 - q] in "ZY")
        ny = sum(c == "Y" for c in label)
        # P|b> = i^ny (-1)^popcount(b & zm) |b ^ xm>
        sign = 1 - 2 * (_popcount(torch.as_tensor(b & zm)) & 1).numpy()
        coef = torch.as_tensor(sign * (1j**ny), dtype=COMPLEX)
        cols[j] = (psi[..., b ^ xm].conj() * coef * psi).sum(-1).real
    return torch.stack(cols, -1)


def compile_circuit(circuit: QuantumCircuit, inputs: ParameterVector | str | None = "x",
                    weights: ParameterVector | str | None = "w",
                    observables: Sequence[str] | None = None) -> CompiledCircuit:
    """Compile `circuit` with its input and weight parameter vectors (objects or names)."""
    return CompiledCircuit(circuit, inputs, weights, observables)


def check_against_statevector(circuit: QuantumCircuit, inputs: ParameterVector | str | None = "x",
                              weights: ParameterVector | str | None = "w", trials: int = 2, seed: int = 0,
                              atol: float = 1e-10, compiled: CompiledCircuit | None = None) -> float:
    """The compiled executor against qiskit's Statevector on random inputs and weights.

    Returns the largest amplitude difference; raises CircuitError naming the first instruction whose
    prefix circuit differs by more than `atol`.
    """
    compiled = compiled or compile_circuit(circuit, inputs, weights)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-PI, PI, size=(trials, compiled.n_inputs))
    w = rng.uniform(-PI, PI, size=(trials, compiled.n_weights))
    worst = _deviation(circuit, compiled, x, w)
    if worst <= atol:
        return worst
    lo, hi = 0, len(circuit.data)  # prefix `lo` agrees (empty circuit), prefix `hi` differs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        prefix = circuit.copy_empty_like()
        for inst in circuit.data[:mid]:
            prefix.append(inst)
        sub = compile_circuit(prefix, compiled.input_vector, compiled.weight_vector)
        if _deviation(prefix, sub, x, w) > atol:
            hi = mid
        else:
            lo = mid
    inst = circuit.data[hi - 1]
    where = _where(hi - 1, inst.operation.name, [circuit.find_bit(q).index for q in inst.qubits])
    raise CircuitError(f"{where}: the compiled executor differs from qiskit's Statevector by {worst:.1e} "
                       f"(tolerance {atol:.0e})")


def _deviation(circuit: QuantumCircuit, compiled: CompiledCircuit, x: np.ndarray, w: np.ndarray) -> float:
    """Max |amplitude difference| over the trials, qiskit's global phase included."""
    from qiskit.quantum_info import Statevector

    worst = 0.0
    for xi, wi in zip(x, w):
        binding = {}
        for p in circuit.parameters:
            vec = getattr(p, "vector", None)
            if vec is not None and vec.name == compiled.input_name:
                binding[p] = float(xi[p.index])
            elif vec is not None and vec.name == compiled.weight_name:
                binding[p] = float(wi[p.index])
        ref = Statevector(circuit.assign_parameters(binding)).data
        inputs = torch.as_tensor(xi[None]) if compiled.input_name else None
        ours = compiled.statevector(inputs, torch.as_tensor(wi))[0].numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
    return worst
