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


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: torch's intra-op threads cost more than they save on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


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


def test_builtin_circuit_as_a_circuit_model_trains_like_the_builtin() -> None:
    """qnn-angle-l2's own circuit, named as a circuit model, trains one epoch through `fit` to the built-in
    model's weights (1e-10) and logs the same device circuits."""
    from workloads.hparams import model_defaults
    from workloads.models import build_model
    from workloads.models.training import fit
    from workloads.models.modules import QNN
    from workloads.quantum.circuit_model import CircuitLayer

    ref = build_model("qnn-angle-l2", 3)
    twin = QNN(lambda: CircuitLayer(build("angle", {"circuit": f"{B}:builtin_angle", "inputs": "enc"}, n_features=8)))
    with torch.no_grad():
        twin.quantum.weight.copy_(ref.quantum.weight.reshape(-1))
        twin.head.load_state_dict(ref.head.state_dict())
    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.uniform(0, np.pi, size=(64, 8))), torch.tensor(rng.integers(0, 10, size=64))
    recipe = model_defaults("qnn-angle-l2")
    cost_ref, cost_twin = fit(ref, x, y, recipe, None, 5, epochs=1), fit(twin, x, y, recipe, None, 5, epochs=1)
    assert (ref.quantum.weight.detach().reshape(-1) - twin.quantum.weight.detach()).abs().max() < 1e-10
    assert (cost_ref.circuits, cost_ref.device_circuits) == (cost_twin.circuits, cost_twin.device_circuits)


def test_finite_shot_training_logs_the_shift_circuits() -> None:
    """A circuit model trains at finite shots through `fit`; the log counts the forward circuits and the
    parameter-shift circuits, every one with S shots."""
    from workloads.hparams import model_defaults
    from workloads.models.training import fit
    from workloads.models.modules import QNN
    from workloads.quantum.circuit_model import CircuitLayer

    torch.manual_seed(0)
    net = QNN(lambda: CircuitLayer(build("hea", {"circuit": "examples.hardware_efficient:build"}, n_features=8)))
    before = net.quantum.weight.detach().clone()
    rng = np.random.default_rng(3)
    x, y = torch.tensor(rng.uniform(0, np.pi, size=(8, 8))), torch.tensor(rng.integers(0, 10, size=8))
    recipe = {**model_defaults("qnn-angle-l2"), "batch_size": 4}
    cost = fit(net, x, y, recipe, 50, 1, epochs=1)
    per_sample = 1 + 2 * 24  # forward, then two shifted circuits per RY(w) angle
    assert (cost.circuits, cost.device_circuits, cost.shots) == (8 * per_sample, 8 * per_sample, 8 * per_sample * 50)
    assert not torch.equal(before, net.quantum.weight.detach())
