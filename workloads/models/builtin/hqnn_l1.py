"""hqnn-l1, the published study's hybrid model: 28x28 image -> Conv(5x5, 5) -> max-pool -> Linear(980, 256) ->
L2-normalised amplitudes (Mottonen tree) -> 1 layer of U3 and a CNOT ring on 8 qubits -> <Z> -> Linear(8, 10)."""

from __future__ import annotations

from qiskit import QuantumCircuit

from ...quantum.circuits import ansatz

NAME = "hqnn-l1"
FAMILY = "hqnn"
ENTRY = {"circuit": f"{__name__}:circuit", "weights": "w", "encoding": "amplitude"}
FAST_LAYERS = 1


def circuit() -> QuantumCircuit:
    return ansatz(FAST_LAYERS)
