"""The circuits in qiskit, the source of truth that every executor is checked against.

Qubit q is bit q of the basis index (qiskit's little-endian order). Weights are laid out as
(layer, qubit, [theta, phi, lambda]), flattened to index 24*l + 3*q + k.
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

N_QUBITS = 8
N_PREP = 2**N_QUBITS - 1  # RY angles in the amplitude-embedding tree


def n_weights(n_layers: int) -> int:
    return 3 * N_QUBITS * n_layers


def ansatz(n_layers: int, name: str = "w") -> QuantumCircuit:
    """L layers of U3 on every qubit followed by the CNOT ring 0->1, ..., 6->7, 7->0."""
    w = ParameterVector(name, n_weights(n_layers))
    qc = QuantumCircuit(N_QUBITS, name=f"ansatz_l{n_layers}")
    for layer in range(n_layers):
        for q in range(N_QUBITS):
            i = 3 * (N_QUBITS * layer + q)
            qc.u(w[i], w[i + 1], w[i + 2], q)
        for q in range(N_QUBITS):
            qc.cx(q, (q + 1) % N_QUBITS)
    return qc


def level_target(k: int) -> int:
    """Level k of the amplitude tree rotates qubit 7-k, controlled by the qubits above it."""
    return N_QUBITS - 1 - k


def gray(i: int) -> int:
    return i ^ (i >> 1)


def gray_signs(k: int) -> np.ndarray:
    """S with alpha_c = sum_i S[c, i] * theta_i for the Gray-code decomposition of level k.

    Before the i-th RY the CNOTs so far have flipped the target under control mask gray(i), and
    X RY(t) X = RY(-t), so control state c sees the sign (-1)^popcount(gray(i) & c).
    """
    n = 2**k
    return np.array(
        [[(-1.0) ** bin(gray(i) & c).count("1") for i in range(n)] for c in range(n)]
    ).reshape(n, n)


def amplitude_tree(name: str = "enc") -> QuantumCircuit:
    """Real amplitude embedding as RY rotations and CNOTs (Mottonen et al. 2004).

    Parameters are the 255 Gray-code angles theta; `tree_theta` computes them from a vector.
    """
    theta = ParameterVector(name, N_PREP)
    qc = QuantumCircuit(N_QUBITS, name="amplitude_tree")
    offset = 0
    for k in range(N_QUBITS):
        target, n = level_target(k), 2**k
        for i in range(n):
            qc.ry(theta[offset + i], target)
            if k > 0:
                changed = (gray(i) ^ gray((i + 1) % n)).bit_length() - 1
                qc.cx(N_QUBITS - k + changed, target)
        offset += n
    return qc


def angle_encoding(name: str = "enc") -> QuantumCircuit:
    x = ParameterVector(name, N_QUBITS)
    qc = QuantumCircuit(N_QUBITS, name="angle_encoding")
    for q in range(N_QUBITS):
        qc.ry(x[q], q)
    return qc


def model_circuit(encoding: str, n_layers: int, measure: bool = False) -> QuantumCircuit:
    """Encoding followed by the ansatz; with `measure`, all qubits measured for a sampler."""
    if encoding == "amplitude":
        enc = amplitude_tree()
    elif encoding == "angle":
        enc = angle_encoding()
    else:
        raise ValueError(f"unknown encoding {encoding!r}; choose 'amplitude' or 'angle'")
    qc = enc.compose(ansatz(n_layers))
    if measure:
        qc.measure_all()
    return qc


def tree_alpha(x: np.ndarray) -> np.ndarray:
    """Tree angles alpha(x) of a real unit vector, levels concatenated (1 + 2 + ... + 128)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 2**N_QUBITS)
    out = []
    for k in range(N_QUBITS):
        blocks = x.reshape(len(x), 2**k, 2, -1)
        if k < N_QUBITS - 1:
            left, right = np.linalg.norm(blocks[:, :, 0], axis=-1), np.linalg.norm(blocks[:, :, 1], axis=-1)
        else:
            left, right = blocks[:, :, 0, 0], blocks[:, :, 1, 0]
        out.append(2.0 * np.arctan2(right, left))
    return np.concatenate(out, axis=1)


def tree_theta(x: np.ndarray) -> np.ndarray:
    """Gray-code angles theta = S^-1 alpha per level, to bind into `amplitude_tree`."""
    alpha = tree_alpha(x)
    out, offset = [], 0
    for k in range(N_QUBITS):
        n = 2**k
        s = gray_signs(k)
        out.append(alpha[:, offset : offset + n] @ s / n)  # theta = S^T alpha / n since S^T S = n I
        offset += n
    return np.concatenate(out, axis=1)


def parameter_values(encoding: str, features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-sample values for `model_circuit(encoding, L)` in its parameter order ('enc' sorts before 'w')."""
    feats = tree_theta(features) if encoding == "amplitude" else np.asarray(features, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64).reshape(1, -1), (len(feats), weights.size))
    return np.concatenate([feats, w], axis=1)
