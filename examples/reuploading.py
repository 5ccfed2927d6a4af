"""A data re-uploading circuit (Perez-Salinas et al. 2020): every layer encodes the features again,
RY(x_q + w) then RZ(w) on each qubit, followed by a CNOT ring. The trainable offsets inside the encoding
angles are linear expressions, which the compiled executor takes as they are. Model entry:

    models:
      reupload: {circuit: "examples.reuploading:build", inputs: x, weights: w, encoding: angle}
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector


def build(n_qubits: int = 8, n_layers: int = 3) -> QuantumCircuit:
    x = ParameterVector("x", n_qubits)
    w = ParameterVector("w", 2 * n_qubits * n_layers)
    qc = QuantumCircuit(n_qubits, name="reuploading")
    for layer in range(n_layers):
        base = 2 * n_qubits * layer
        for q in range(n_qubits):
            qc.ry(x[q] + w[base + q], q)
            qc.rz(w[base + n_qubits + q], q)
        for q in range(n_qubits):
            qc.cx(q, (q + 1) % n_qubits)
    return qc
