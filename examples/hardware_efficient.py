"""A hardware-efficient ansatz with angle encoding: RY(x_q) on each qubit, then L layers of RY(w) on
every qubit and a CZ chain. Model entry:

    models:
      hea: {circuit: "examples.hardware_efficient:build", inputs: x, weights: w, encoding: angle}
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector


def build(n_qubits: int = 8, n_layers: int = 3) -> QuantumCircuit:
    x = ParameterVector("x", n_qubits)
    w = ParameterVector("w", n_qubits * n_layers)
    qc = QuantumCircuit(n_qubits, name="hardware_efficient")
    for q in range(n_qubits):
        qc.ry(x[q], q)
    for layer in range(n_layers):
        for q in range(n_qubits):
            qc.ry(w[layer * n_qubits + q], q)
        for q in range(n_qubits - 1):
            qc.cz(q, q + 1)
    return qc
