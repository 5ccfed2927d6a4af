"""Circuit builders with one mistake each, for the circuit-model entry tests."""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector


def good(n: int = 4) -> QuantumCircuit:
    x, w = ParameterVector("x", n), ParameterVector("w", n)
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(x[q], q)
        qc.rx(w[q], q)
    for q in range(n - 1):
        qc.cz(q, q + 1)
    return qc


def measured() -> QuantumCircuit:
    qc = good()
    qc.measure_all()
    return qc


def reset() -> QuantumCircuit:
    qc = good()
    qc.reset(2)
    qc.h(2)
    return qc


def toffoli() -> QuantumCircuit:
    qc = good()
    qc.ccx(0, 1, 2)
    return qc


def nonlinear() -> QuantumCircuit:
    qc = good()
    x, w = qc.data[0].operation.params[0].vector, qc.data[1].operation.params[0].vector
    qc.ry(x[0] * w[0], 1)
    return qc


def wide() -> QuantumCircuit:
    return good(12)


def not_a_circuit() -> str:
    return "a string"


def builtin_angle() -> QuantumCircuit:
    """The built-in qnn-angle-l2 circuit: RY angle encoding ('enc') and two U3 + CNOT-ring layers ('w')."""
    from workloads.quantum.circuits import model_circuit

    return model_circuit("angle", 2)
