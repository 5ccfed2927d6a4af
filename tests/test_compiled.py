"""The compiled circuit executor against qiskit's Statevector and against the built-in models' kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.quantum_info import Operator, SparsePauliOp, Statevector

from workloads.quantum import circuits, compiled as cmod, statevector as sv
from workloads.quantum.compiled import CircuitError, check_against_statevector, compile_circuit

GATES = {  # name -> (qubits, parameters)
    **{g: (1, 0) for g in ("h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "id")},
    **{g: (1, 1) for g in ("rx", "ry", "rz", "p", "u1")}, "u2": (1, 2), "u": (1, 3), "u3": (1, 3),
    **{g: (2, 0) for g in ("cx", "cy", "cz", "ch", "cs", "csdg", "csx", "swap", "iswap", "dcx", "ecr")},
    **{g: (2, 1) for g in ("crx", "cry", "crz", "cp", "cu1", "rxx", "ryy", "rzz", "rzx")}, "cu3": (2, 3),
}
N_IN, N_W = 6, 12
STANDARD = get_standard_gate_name_mapping()


def _add(qc: QuantumCircuit, name: str, params: list, qubits: list[int]) -> None:
    """Append a standard gate by name (qiskit 2 has no methods for u1, u2, u3, cu1, cu3)."""
    qc.append(type(STANDARD[name])(*params), qubits)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: torch's intra-op threads cost more than they save on a busy machine (20x here)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _angle(rng: np.random.Generator, x: ParameterVector, w: ParameterVector):
    """A constant, or an affine expression in an input and/or a weight."""
    kind = rng.integers(4)
    if kind == 0:
        return float(rng.uniform(-np.pi, np.pi))
    a, b, c = rng.uniform(-2, 2, size=3)
    xi, wi = x[int(rng.integers(N_IN))], w[int(rng.integers(N_W))]
    return {1: a * xi + c, 2: b * wi - c, 3: a * xi + b * wi + c}[int(kind)]


def random_circuit(n: int, n_gates: int, seed: int) -> QuantumCircuit:
    """Gates drawn uniformly from the supported set on random qubits, with a random global phase."""
    rng = np.random.default_rng(seed)
    x, w = ParameterVector("x", N_IN), ParameterVector("w", N_W)
    qc = QuantumCircuit(n, global_phase=float(rng.uniform(0, 2 * np.pi)))
    for q in range(n):  # every vector element present, so both vectors have their full length
        qc.ry(x[q % N_IN] + w[q % N_W], q)
    names = sorted(GATES)
    for _ in range(n_gates):
        name = names[int(rng.integers(len(names)))]
        arity, n_params = GATES[name]
        qubits = [int(q) for q in rng.choice(n, size=arity, replace=False)]
        _add(qc, name, [_angle(rng, x, w) for _ in range(n_params)], qubits)
        if rng.random() < 0.1:
            qc.barrier()
    return qc


def _bind(qc: QuantumCircuit, xv: np.ndarray, wv: np.ndarray) -> QuantumCircuit:
    values = {}
    for p in qc.parameters:
        values[p] = float((xv if p.vector.name == "x" else wv)[p.index])
    return qc.assign_parameters(values)


def _z_reference(qc: QuantumCircuit, xv: np.ndarray, wv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    state = Statevector(_bind(qc, xv, wv))
    n = qc.num_qubits
    z = [state.expectation_value(SparsePauliOp("I" * (n - 1 - j) + "Z" + "I" * j)).real for j in range(n)]
    return np.array(z), state.data


@pytest.mark.parametrize("n", [8, 10])
def test_random_circuits_match_statevector(n: int) -> None:
    """30 random circuits per size from the whole supported gate set: <Z> and amplitudes to 1e-10."""
    rng = np.random.default_rng(n)
    worst_z = worst_amp = 0.0
    for seed in range(30):
        qc = random_circuit(n, 40, 1000 * n + seed)
        cc = compile_circuit(qc, "x", "w")
        xs, ws = rng.uniform(-np.pi, np.pi, size=(2, N_IN)), rng.uniform(-np.pi, np.pi, size=N_W)
        z = cc.expectations(torch.tensor(xs), torch.tensor(ws)).numpy()
        amps = cc.statevector(torch.tensor(xs), torch.tensor(ws)).numpy()
        for row in range(2):
            z_ref, amp_ref = _z_reference(qc, xs[row], ws)
            worst_z = max(worst_z, np.abs(z[row] - z_ref).max())
            worst_amp = max(worst_amp, np.abs(amps[row] - amp_ref).max())
    assert worst_z <= 1e-10 and worst_amp <= 1e-10, (worst_z, worst_amp)


@pytest.mark.parametrize("name", sorted(GATES))
def test_each_gate_matrix_matches_qiskit(name: str) -> None:
    """The compiled matrix of every gate, on the basis states as a batch, equals qiskit's Operator."""
    arity, n_params = GATES[name]
    w = ParameterVector("w", max(n_params, 1))
    qc = QuantumCircuit(2)
    _add(qc, name, [0.7 * w[i] - 0.2 for i in range(n_params)], [1, 0] if arity == 2 else [1])
    qc.rz(w[0], 0)  # keeps the weight vector in the circuit for fixed gates
    values = np.array([0.9, -1.3, 2.1])[: len(w)]
    cc = compile_circuit(qc, None, "w")
    got = cc.statevector(None, torch.tensor(values), initial_state=torch.eye(4, dtype=torch.complex128)).numpy().T
    want = Operator(qc.assign_parameters({w: values})).data
    assert np.abs(got - want).max() < 1e-12


def test_ansatz_matches_hand_written_kernel() -> None:
    """qnn-l5's ansatz on amplitude-embedded states: the same <Z> and weight gradients as the kernel."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(16, 256)))
    x = x / x.norm(dim=1, keepdim=True)
    w = torch.tensor(rng.uniform(0, 2 * np.pi, size=(5, 8, 3)), requires_grad=True)
    flat = w.detach().reshape(-1).clone().requires_grad_()
    cc = compile_circuit(circuits.ansatz(5), None, "w")
    z_hand, z_gen = sv.ansatz_expectations(x, w), cc.expectations(None, flat, initial_state=x)
    assert (z_hand - z_gen).abs().max() < 1e-10
    g = torch.tensor(rng.normal(size=(16, 8)))
    (z_hand * g).sum().backward()
    (z_gen * g).sum().backward()
    assert (w.grad.reshape(-1) - flat.grad).abs().max() < 1e-10


@pytest.mark.parametrize("encoding,n_layers", [("amplitude", 2), ("angle", 2)])
def test_builtin_circuits_match_hand_written_kernel(encoding: str, n_layers: int) -> None:
    """The built-in models' whole qiskit circuits (Mottonen tree or RY angles, then the ansatz), compiled,
    give the kernel's <Z> to 1e-10."""
    rng = np.random.default_rng(2)
    w = rng.uniform(0, 2 * np.pi, size=(n_layers, 8, 3))
    if encoding == "amplitude":
        feats = rng.normal(size=(4, 256))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        inputs, states = circuits.tree_theta(feats), torch.tensor(feats)
    else:
        inputs = feats = rng.uniform(0, np.pi, size=(4, 8))
        states = sv.angle_states(torch.tensor(feats))
    cc = compile_circuit(circuits.model_circuit(encoding, n_layers), "enc", "w")
    z_gen = cc.expectations(torch.tensor(inputs), torch.tensor(w.reshape(-1)))
    z_hand = sv.ansatz_expectations(states, torch.tensor(w))
    assert (z_gen - z_hand).abs().max() < 1e-10


def test_many_models_equal_each_model_alone() -> None:
    """Weights (K, n_w) run K models in one call; each equals its own run, gradients included."""
    qc = random_circuit(6, 30, 7)
    cc = compile_circuit(qc, "x", "w")
    rng = np.random.default_rng(3)
    xs = torch.tensor(rng.uniform(-1, 1, size=(5, N_IN)))
    ws = torch.tensor(rng.uniform(-1, 1, size=(3, N_W)), requires_grad=True)
    together = cc.expectations(xs, ws)
    together.sum().backward()
    for k in range(3):
        wk = ws.detach()[k].clone().requires_grad_()
        alone = cc.expectations(xs, wk)
        alone.sum().backward()
        assert (together[k] - alone).abs().max() < 1e-12
        assert (ws.grad[k] - wk.grad).abs().max() < 1e-12


def test_input_gradients_match_finite_differences() -> None:
    qc = random_circuit(4, 25, 11)
    cc = compile_circuit(qc, "x", "w")
    rng = np.random.default_rng(4)
    xs = torch.tensor(rng.uniform(-1, 1, size=(2, N_IN)), requires_grad=True)
    ws = torch.tensor(rng.uniform(-1, 1, size=N_W))
    assert torch.autograd.gradcheck(lambda a: cc.expectations(a, ws), (xs,), eps=1e-6, atol=1e-7)


def test_pauli_string_observables_match_statevector() -> None:
    qc = random_circuit(5, 30, 5)
    labels = ["XIIZY", "IIIIZ", "ZZIII", "YXZIX"]
    cc = compile_circuit(qc, "x", "w", observables=labels)
    rng = np.random.default_rng(5)
    xv, wv = rng.uniform(-1, 1, size=N_IN), rng.uniform(-1, 1, size=N_W)
    got = cc.expectations(torch.tensor(xv[None]), torch.tensor(wv))[0].numpy()
    state = Statevector(_bind(qc, xv, wv))
    want = [state.expectation_value(SparsePauliOp(label)).real for label in labels]
    assert np.abs(got - want).max() < 1e-12


def test_check_names_the_first_differing_instruction(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a wrong sx matrix the check fails and names the first sx; with the right one it passes."""
    x, w = ParameterVector("x", 2), ParameterVector("w", 2)
    qc = QuantumCircuit(8)
    qc.ry(x[0], 0)
    qc.rx(w[0] + x[1], 1)
    qc.cx(0, 1)
    qc.sx(3)
    qc.rzz(w[1], 2, 3)
    qc.sx(5)
    assert check_against_statevector(qc, "x", "w") <= 1e-10
    monkeypatch.setitem(cmod.FIXED_1Q, "sx", (np.pi / 2, -np.pi / 2, np.pi / 2, 0))  # drops the global phase
    with pytest.raises(CircuitError, match=r"instruction 3 \(sx on qubit 3\): the compiled executor differs"):
        check_against_statevector(qc, "x", "w")


def _one(op: str) -> QuantumCircuit:
    x, w = ParameterVector("x", 1), ParameterVector("w", 1)
    qc = QuantumCircuit(3, 1)
    qc.ry(x[0], 0)
    qc.rx(w[0], 1)
    if op == "measure":
        qc.measure(1, 0)
    elif op == "reset":
        qc.reset(1)
    elif op == "if_else":
        with qc.if_test((qc.clbits[0], 1)):
            qc.x(1)
    elif op == "ccx":
        qc.ccx(0, 1, 2)
    elif op == "nonlinear":
        qc.ry(x[0] * w[0], 1)
    elif op == "foreign":
        qc.ry(Parameter("theta"), 1)
    return qc


@pytest.mark.parametrize("op,message", [
    ("measure", r"instruction 2 \(measure on qubit 1\): unsupported instruction; measurements are added"),
    ("reset", r"instruction 2 \(reset on qubit 1\): unsupported instruction; mid-circuit resets"),
    ("if_else", r"instruction 2 \(if_else on qubit 1\): unsupported instruction; classically controlled"),
    ("ccx", r"instruction 2 \(ccx on qubits 0, 1, 2\): unsupported instruction; transpile"),
    ("nonlinear", r"instruction 2 \(ry on qubit 1\): angle .* is not linear"),
    ("foreign", r"instruction 2 \(ry on qubit 1\): parameter theta belongs to neither"),
])
def test_unsupported_circuits_name_the_instruction(op: str, message: str) -> None:
    with pytest.raises(CircuitError, match=message):
        compile_circuit(_one(op), "x", "w")


def test_missing_parameter_vector_is_named() -> None:
    with pytest.raises(CircuitError, match=r"weights: the circuit has no parameter vector named 'theta'"):
        compile_circuit(_one("plain"), "x", "theta")


def test_shot_estimates_are_seeded_multinomial_draws() -> None:
    """Z strings from one computational-basis measurement, X/Y strings each from their own; a fixed seed
    gives the same estimates, and they scatter around the exact values at the shot-noise scale."""
    qc = random_circuit(4, 20, 9)
    cc = compile_circuit(qc, "x", "w", observables=["IIIZ", "ZIIZ", "XIII"])
    xs, ws = torch.zeros(400, N_IN), torch.full((N_W,), 0.3)
    exact = cc.expectations(xs[:1], ws)[0]
    a = cc.expectations(xs, ws, shots=100, generator=torch.Generator().manual_seed(1))
    b = cc.expectations(xs, ws, shots=100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (torch.round(a * 100 + 100) % 2 == 0).all()  # (ones - zeros) / 100 with ones + zeros = 100
    spread = (a.mean(0) - exact).abs() / ((1 - exact**2).clamp_min(1e-3) / 100 / 400).sqrt()
    assert (spread < 5).all()
    assert cc.settings() == 2


def test_device_circuit_counts() -> None:
    """Two shift terms per rotation angle (rxx included), four for crx; per sample and setting."""
    cc = compile_circuit(circuits.ansatz(5), None, "w")
    assert cc.device_circuits(10) == 10
    assert cc.device_circuits(10, weight_grad=True) == 10 * (1 + 2 * 120)
    x, w = ParameterVector("x", 1), ParameterVector("w", 2)
    qc = QuantumCircuit(2)
    qc.ry(x[0], 0)
    qc.rxx(w[0], 0, 1)
    qc.crx(w[1] + x[0], 0, 1)
    cc = compile_circuit(qc, "x", "w")
    assert cc.device_circuits(1, weight_grad=True) == 1 + 2 + 4
    assert cc.device_circuits(1, input_grad=True) == 1 + 2 + 4
    assert cc.device_circuits(1, weight_grad=True, input_grad=True) == 1 + 2 + 4 + 2 + 4


def test_parameter_shift_rules_give_the_exact_gradient() -> None:
    """The shift rules (two terms, four for crx/cry/crz/cu3's angle) on exact shifted circuits equal autograd
    to 1e-10, with respect to weights and inputs, through linear angle expressions."""
    qc = random_circuit(4, 40, 13)
    cc = compile_circuit(qc, "x", "w", observables=["IIIZ", "ZZII", "XIIY"])
    assert any(inst.operation.name in ("crx", "cry", "crz", "cu3") for inst in qc.data)
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.uniform(-1, 1, size=(3, N_IN)), requires_grad=True)
    w = torch.tensor(rng.uniform(-1, 1, size=N_W), requires_grad=True)
    g = torch.tensor(rng.normal(size=(3, 3)))
    (cc.expectations(x, w) * g).sum().backward()
    g_w, g_in = cc.shift_gradients(x, w, None, g, None, None, weight_grad=True, input_grad=True)
    assert (g_w - w.grad).abs().max() < 1e-10 and (g_in - x.grad).abs().max() < 1e-10


def test_finite_shot_gradients_are_shift_rule_estimates() -> None:
    """At finite shots the backward runs the shifted circuits with S shots each: seeded, and within shot noise
    of the exact gradient."""
    qc = random_circuit(4, 30, 3)
    cc = compile_circuit(qc, "x", "w")
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.uniform(-1, 1, size=(2, N_IN)))
    w = torch.tensor(rng.uniform(-1, 1, size=N_W), requires_grad=True)
    cc.expectations(x, w).sum().backward()
    exact, grads = w.grad.clone(), []
    for _ in range(2):
        w.grad = None
        cc.expectations(x, w, shots=10**6, generator=torch.Generator().manual_seed(3)).sum().backward()
        grads.append(w.grad.clone())
    assert torch.equal(grads[0], grads[1])
    assert 0 < (grads[0] - exact).abs().max() < 0.05
