"""The built-in models are circuit models with a fast path: each member's circuit, compiled and checked
against qiskit's Statevector as a grid's circuit model is, gives its kernel's <Z>; the qiskit backends run
that same circuit; and a member without a kernel needs only its module and a registry line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from tests.support import builtin_hybrid_ry
from workloads.models import (MODELS, builtin_spec, build_model, input_view, measured_circuit, model_spec,
                              use_circuit_models)
from workloads.models.batched import stackable, train_many
from workloads.models.builtin import BUILTINS, REQUIRED
from workloads.models.training import fit
from workloads.quantum.circuit_model import build
from workloads.quantum.circuits import N_QUBITS, tree_theta
from workloads.quantum.statevector import angle_states, ansatz_expectations
from workloads.registry import members
from workloads.stages import CellConfig

KERNEL_MEMBERS = [n for n, m in BUILTINS.items() if m.FAST_LAYERS is not None]


def _inputs(encoding: str, rng: np.random.Generator, rows: int) -> np.ndarray:
    if encoding == "angle":
        return rng.uniform(0, np.pi, size=(rows, N_QUBITS))
    x = rng.normal(size=(rows, 2**N_QUBITS))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", KERNEL_MEMBERS)
def test_member_circuit_gives_its_kernels_expectations(name: str) -> None:
    member, spec = BUILTINS[name], model_spec(name)
    model = build(name, member.ENTRY, n_features=None if spec.encoding == "amplitude" else N_QUBITS)
    rng = np.random.default_rng(len(name))
    x = torch.tensor(_inputs(spec.encoding, rng, 16))
    w = torch.tensor(rng.uniform(0, 2 * np.pi, size=(member.FAST_LAYERS, N_QUBITS, 3)))
    if spec.encoding == "amplitude":
        compiled = model.compiled.expectations(None, w.reshape(-1), x)
        kernel = ansatz_expectations(x.to(torch.complex128), w)
    else:
        compiled = model.compiled.expectations(x, w.reshape(-1))
        kernel = ansatz_expectations(angle_states(x), w)
    assert (compiled - kernel).abs().max().item() < 1e-10


@pytest.mark.parametrize("name", KERNEL_MEMBERS)
def test_qiskit_backends_run_the_members_circuit(name: str) -> None:
    """The measured circuit of a kernel member (encoding, then ansatz) prepares the state that its
    member's circuit prepares from the encoded input."""
    member, spec = BUILTINS[name], model_spec(name)
    rng = np.random.default_rng(7)
    x = _inputs(spec.encoding, rng, 1)
    w = rng.uniform(0, 2 * np.pi, size=member.FAST_LAYERS * 3 * N_QUBITS)
    m = measured_circuit(name)
    qc = m.circuit.remove_final_measurements(inplace=False)
    features = tree_theta(x) if spec.encoding == "amplitude" else x
    values = np.concatenate([features[0], w])[list(m.columns)]
    got = Statevector(qc.assign_parameters(values))
    own = member.circuit()
    vec = own.parameters
    binding = {p: (w[p.index] if p.vector.name == "w" else x[0][p.index]) for p in vec}
    start = Statevector(x[0].astype(complex)) if spec.encoding == "amplitude" else Statevector.from_int(0, 2**8)
    want = start.evolve(own.assign_parameters(binding))
    assert np.abs(got.data - want.data).max() < 1e-10


def test_registry_refuses_a_member_without_a_required_attribute() -> None:
    class Partial:
        __name__ = "partial"
        NAME, FAMILY = "p", "qnn"

    with pytest.raises(TypeError, match="ENTRY, FAST_LAYERS, circuit"):
        members(REQUIRED, Partial)  # type: ignore[arg-type]


def test_registry_refuses_a_family_it_cannot_build() -> None:
    class Member:
        __name__ = "member"
        NAME, FAMILY, FAST_LAYERS = "m", "cnn", 1
        ENTRY = {"circuit": "x:y", "encoding": "amplitude"}

    with pytest.raises(TypeError, match="FAMILY 'cnn'"):
        builtin_spec(Member)  # type: ignore[arg-type]
    Member.FAMILY, Member.ENTRY = "hqnn", {"circuit": "x:y", "inputs": "x", "encoding": "angle"}
    with pytest.raises(TypeError, match="needs encoding: amplitude"):
        builtin_spec(Member)  # type: ignore[arg-type]


def test_a_member_without_a_kernel_is_one_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test member (tests/support/builtin_hybrid_ry.py) joins the registry as the line in
    workloads/models/builtin puts a member there, then builds, trains through `fit` and `train_many`
    alike, reads images, stays when a grid's circuit models change, and refuses finite-shot training."""
    from workloads.models import builtin

    member = members(REQUIRED, builtin_hybrid_ry)[builtin_hybrid_ry.NAME]
    monkeypatch.setitem(builtin.BUILTINS, member.NAME, member)
    monkeypatch.setitem(MODELS, member.NAME, builtin_spec(member))
    use_circuit_models({})
    spec = model_spec(member.NAME)
    assert (spec.family, spec.encoding, spec.circuit is not None) == ("hqnn", "amplitude", True)
    assert input_view(member.NAME) == "images"
    a, b = build_model(member.NAME, 4, image_side=8), build_model(member.NAME, 4, image_side=8)
    assert not stackable(a) and a.quantum.weight.shape == (16,)
    assert a.head.in_features == N_QUBITS
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(-1, 1, size=(24, 1, 8, 8)))
    y = torch.tensor(rng.integers(0, 10, size=24))
    recipe = {"lr": 0.05, "momentum": 0.9, "batch_size": 8, "epochs": 1}
    before = a.quantum.weight.detach().clone()
    fit(a, x, y, recipe, None, 3)
    train_many([b], [(x, y)], recipe, [3])
    assert not torch.equal(before, a.quantum.weight.detach())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert measured_circuit(member.NAME).circuit.num_qubits == N_QUBITS
    cell = CellConfig(member.NAME, "class:4", "ga", None, 64, None, 0, dataset="digits", n_train=200, n_test=100)
    with pytest.raises(ValueError, match="unlearn_shots: model 'hqnn-ry-l2' runs its circuit on the compiled"):
        cell.validate()
