"""Circuit-model entries: the examples load, compile and pass the Statevector check; every mistake is one
CircuitError naming the entry's key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from qiskit import qasm3, qpy

from examples import hardware_efficient, reuploading
from workloads.quantum.circuit_model import build, provenance
from workloads.quantum.compiled import CircuitError, compile_circuit

B = "tests.support.circuit_builders"


@pytest.mark.parametrize("module", ["hardware_efficient", "reuploading"])
def test_examples_build_check_and_train(module: str) -> None:
    """Each example compiles, agrees with Statevector, and one SGD step through it lowers the loss."""
    model = build(module, {"circuit": f"examples.{module}:build", "inputs": "x", "weights": "w",
                           "encoding": "angle", "observables": "Z", "head": "linear"})
    cc = model.compiled
    assert (cc.n_qubits, cc.n_inputs) == (8, 8)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(0, np.pi, size=(32, 8)))
    y = torch.tensor(rng.integers(0, 10, size=32))
    w = torch.tensor(rng.uniform(0, 2 * np.pi, size=cc.n_weights), requires_grad=True)
    head = torch.nn.Linear(8, 10, dtype=torch.float64)
    loss = lambda: torch.nn.functional.cross_entropy(head(cc.expectations(x, w)), y)  # noqa: E731
    before = loss()
    before.backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    assert loss() < before


def test_provenance_is_stable_across_builds() -> None:
    """Two builds of one circuit hash the same (QPY bytes would not: they carry parameter UUIDs)."""
    a, b = provenance(hardware_efficient.build()), provenance(hardware_efficient.build())
    assert a == b
    assert a["circuit_qubits"] == 8 and a["circuit_parameters"] == 32 and a["circuit_two_qubit_gates"] == 21
    assert provenance(reuploading.build())["circuit_hash"] != a["circuit_hash"]


@pytest.mark.parametrize("suffix", [".qpy", ".qasm"])
def test_circuit_files(tmp_path: Path, suffix: str) -> None:
    """QPY keeps the parameter vectors; OpenQASM 3 flattens them, and the loader restores x[i] and w[i]."""
    qc = reuploading.build(4, 2)
    path = tmp_path / f"c{suffix}"
    if suffix == ".qpy":
        with path.open("wb") as f:
            qpy.dump(qc, f)
    else:
        path.write_text(qasm3.dumps(qc))
    model = build("file", {"circuit": str(path)})
    assert (model.compiled.n_inputs, model.compiled.n_weights) == (4, 16)
    rng = np.random.default_rng(1)
    x, w = torch.tensor(rng.uniform(size=(3, 4))), torch.tensor(rng.uniform(size=16))
    assert torch.allclose(model.compiled.expectations(x, w), compile_circuit(qc).expectations(x, w), atol=1e-12)


MISTAKES = [
    ({"circuit": "no_such_pkg.ansatz:build"}, r"models.m.circuit: cannot import module 'no_such_pkg.ansatz'"),
    ({"circuit": f"{B}:missing"}, r"models.m.circuit: module '.*' has no function 'missing'"),
    ({"circuit": f"{B}:not_a_circuit"}, r"models.m.circuit: .*not_a_circuit returned str, not a QuantumCircuit"),
    ({"circuit": f"{B}:good", "inputs": "features"}, r"models.m.inputs: inputs: the circuit has no parameter vector "
                                                     r"named 'features'"),
    ({"circuit": f"{B}:good", "weights": "theta"}, r"models.m.weights: weights: the circuit has no parameter vector "
                                                   r"named 'theta'"),
    ({"circuit": f"{B}:measured"}, r"models.m.circuit: instruction \d+ \(measure on qubit 0\): unsupported "
                                   r"instruction; measurements are added"),
    ({"circuit": f"{B}:reset"}, r"models.m.circuit: instruction \d+ \(reset on qubit 2\): unsupported instruction; "
                                r"mid-circuit resets"),
    ({"circuit": f"{B}:wide"}, r"models.m.circuit: 12 qubits, more than the 8 of backend fake:FakeTest"),
    ({"circuit": f"{B}:toffoli"}, r"models.m.circuit: instruction \d+ \(ccx on qubits 0, 1, 2\): unsupported"),
    ({"circuit": f"{B}:nonlinear"}, r"models.m.circuit: instruction \d+ \(ry on qubit 1\): angle .* is not linear"),
    ({"circuit": f"{B}:good", "encoding": "basis"}, r"models.m.encoding: 'basis' is not one of angle, amplitude"),
    ({"circuit": f"{B}:good", "encoding": "amplitude", "inputs": None}, r"models.m.encoding: amplitude encoding "
                                                                        r"needs 8 qubits"),
    ({"circuit": f"{B}:good", "observables": ["ZZ"]}, r"models.m.observables: observable 'ZZ': need a Pauli string "
                                                      r"of 4 letters"),
    ({"circuit": f"{B}:good", "head": "mlp"}, r"models.m.head: 'mlp' is not one of linear"),
    ({"circuit": f"{B}:good", "layers": 3}, r"models.m.layers: unknown key"),
    ({"circuit": "missing.qpy"}, r"models.m.circuit: file missing.qpy not found"),
]


@pytest.mark.parametrize("entry,message", MISTAKES, ids=[str(i) for i in range(len(MISTAKES))])
def test_each_mistake_is_one_error_naming_the_key(entry: dict, message: str) -> None:
    with pytest.raises(CircuitError, match=message) as info:
        build("m", entry, max_qubits=8, backend="fake:FakeTest")
    assert "\n" not in str(info.value)


def test_good_entry_passes() -> None:
    assert build("m", {"circuit": f"{B}:good"}, max_qubits=8).compiled.n_qubits == 4
