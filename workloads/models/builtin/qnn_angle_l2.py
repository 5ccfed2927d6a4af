"""qnn-angle-l2, a shallow circuit that devices can run: 8 PCA features as RY angles -> 2 layers of U3 and a CNOT
ring on 8 qubits -> <Z> -> Linear(8, 10)."""

from __future__ import annotations

from qiskit import QuantumCircuit

from ...quantum.circuits import angle_encoding, ansatz

NAME = "qnn-angle-l2"
FAMILY = "qnn"
ENTRY = {"circuit": f"{__name__}:circuit", "inputs": "x", "weights": "w", "encoding": "angle"}
FAST_LAYERS = 2


def circuit() -> QuantumCircuit:
    return angle_encoding("x").compose(ansatz(FAST_LAYERS))
