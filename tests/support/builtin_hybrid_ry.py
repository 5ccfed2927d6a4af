"""A built-in model as a contributor would add one: this module plus one line in the registry. The hybrid
front end before an RY/CZ circuit that no hand-written kernel runs, so the compiled executor runs it."""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

NAME = "hqnn-ry-l2"
FAMILY = "hqnn"
ENTRY = {"circuit": f"{__name__}:circuit", "weights": "w", "encoding": "amplitude"}
FAST_LAYERS = None


def circuit() -> QuantumCircuit:
    w = ParameterVector("w", 16)
    qc = QuantumCircuit(8)
    for layer in range(2):
        for q in range(8):
            qc.ry(w[8 * layer + q], q)
        for q in range(7):
            qc.cz(q, q + 1)
    return qc
