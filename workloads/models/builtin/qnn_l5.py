"""qnn-l5, the published study's QNN: 256 amplitudes (Mottonen tree) -> 5 layers of U3 and a CNOT ring on 8
qubits -> <Z> -> Linear(8, 10)."""

from __future__ import annotations

from qiskit import QuantumCircuit

from ...quantum.circuits import ansatz

NAME = "qnn-l5"
FAMILY = "qnn"
ENTRY = {"circuit": f"{__name__}:circuit", "weights": "w", "encoding": "amplitude"}
FAST_LAYERS = 5


def circuit() -> QuantumCircuit:
    return ansatz(FAST_LAYERS)
