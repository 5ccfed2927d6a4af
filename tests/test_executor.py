"""The torch executor against qiskit: Statevector (exact), Aer SamplerV2 (shots), parameter shift."""

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector

from workloads.quantum import circuits, statevector as sv
from workloads.quantum.parameter_shift import ExecutionLog, ShotExpectation, encode, input_gradient, weight_gradient
from workloads.quantum.shots import sample_expectations


def _unit(rng, n):
    x = rng.normal(size=(n, 256))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _features(encoding, rng, n):
    return _unit(rng, n) if encoding == "amplitude" else rng.uniform(0, np.pi, size=(n, 8))


def _torch_states(encoding, feats, w):
    t = torch.tensor(feats)
    states = sv.amplitude_states(t) if encoding == "amplitude" else sv.angle_states(t)
    return sv.apply_layers(states, torch.tensor(w))


@pytest.mark.parametrize("encoding", ["amplitude", "angle"])
@pytest.mark.parametrize("n_layers", [1, 2, 5])
def test_statevector_matches_qiskit(encoding, n_layers):
    rng = np.random.default_rng(n_layers)
    feats = _features(encoding, rng, 3)
    w = rng.uniform(0, 2 * np.pi, size=(n_layers, 8, 3))
    ours = _torch_states(encoding, feats, w).numpy()
    qc = circuits.model_circuit(encoding, n_layers)
    for i, vals in enumerate(circuits.parameter_values(encoding, feats, w)):
        ref = Statevector(qc.assign_parameters(vals)).data
        assert np.abs(ours[i] - ref).max() <= 1e-10


@pytest.mark.parametrize("complex_input", [False, True])
@pytest.mark.parametrize("n_layers", [1, 4])
def test_hand_written_backward_equals_autograd(complex_input, n_layers):
    """`ansatz_expectations` differentiates by hand; autograd through `apply_layers` is the reference."""
    rng = np.random.default_rng(3)
    x = torch.tensor(_unit(rng, 5))
    if complex_input:
        x = torch.polar(x, torch.tensor(rng.uniform(0, 6, size=x.shape)))
    w = torch.tensor(rng.uniform(0, 6, size=(n_layers, 8, 3)))
    grad_z = torch.tensor(rng.normal(size=(5, 8)))
    grads = []
    for fn in (lambda s, v: sv.expectations(sv.apply_layers(s, v)), sv.ansatz_expectations):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        z = fn(xs, ws)
        grads.append((z.detach(), *torch.autograd.grad(z, (xs, ws), grad_z)))
    for ref, ours in zip(*grads):
        assert ours.dtype == ref.dtype
        assert (ours - ref).abs().max() <= 1e-12
    with torch.no_grad():
        assert (sv.ansatz_expectations(x, w) - grads[0][0]).abs().max() <= 1e-15


@pytest.mark.parametrize("complex_input", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_k_models_at_once_equal_autograd_model_by_model(complex_input, input_grad):
    """K models' states (K, rows, 256) and weights (K, L, 8, 3) in one call: each model's outputs and
    gradients equal autograd through its own `apply_layers` (weights only skips a product in the first layer)."""
    rng = np.random.default_rng(8)
    x = torch.tensor(np.stack([_unit(rng, 4) for _ in range(3)]))
    if complex_input:
        x = torch.polar(x, torch.tensor(rng.uniform(0, 6, size=x.shape)))
    w = torch.tensor(rng.uniform(0, 6, size=(3, 2, 8, 3)))
    grad_z = torch.tensor(rng.normal(size=(3, 4, 8)))
    xs, ws = x.clone().requires_grad_(input_grad), w.clone().requires_grad_()
    z = sv.ansatz_expectations(xs, ws)
    ours = torch.autograd.grad(z, (xs, ws) if input_grad else (ws,), grad_z)
    for k in range(3):
        xk, wk = x[k].clone().requires_grad_(input_grad), w[k].clone().requires_grad_()
        zk = sv.expectations(sv.apply_layers(xk, wk))
        ref = torch.autograd.grad(zk, (xk, wk) if input_grad else (wk,), grad_z[k])
        assert (z[k] - zk).abs().max() <= 1e-12
        for a, b in zip(ours, ref):
            assert a.dtype == b.dtype and (a[k] - b).abs().max() <= 1e-12


def test_backward_refuses_weights_changed_in_place():
    """As autograd does: a backward after the weights changed in place would mix the forward's states with
    the new weights, so it raises instead of returning a wrong gradient."""
    rng = np.random.default_rng(9)
    x = torch.tensor(_unit(rng, 4))
    w = torch.tensor(rng.uniform(0, 6, size=(2, 8, 3)), requires_grad=True)
    z = sv.ansatz_expectations(x, w)
    with torch.no_grad():
        w.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_float32_close_to_float64():
    rng = np.random.default_rng(4)
    feats, w = _unit(rng, 10), rng.uniform(0, 6, size=(5, 8, 3))
    z64 = sv.expectations(_torch_states("amplitude", feats, w))
    z32 = sv.expectations(sv.apply_layers(sv.amplitude_states(torch.tensor(feats).float()), torch.tensor(w).float()))
    assert z32.dtype == torch.float32
    assert (z64 - z32.double()).abs().max() <= 1e-4


def test_shot_statistics_agree_with_aer_sampler():
    from qiskit import transpile
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    rng = np.random.default_rng(5)
    feats, w = rng.uniform(0, np.pi, size=(4, 8)), rng.uniform(0, 6, size=(2, 8, 3))
    shots = 20000
    qc = transpile(circuits.model_circuit("angle", 2, measure=True), AerSimulator(), seed_transpiler=0)
    result = SamplerV2(seed=11).run([(qc, circuits.parameter_values("angle", feats, w))], shots=shots).result()
    bits = result[0].data.meas.get_bitstrings()
    z_aer = np.array([[1 - 2 * int(b[::-1][j]) for j in range(8)] for b in bits]).reshape(4, shots, 8).mean(1)
    probs = sv.probabilities(_torch_states("angle", feats, w))
    z_ours = sample_expectations(probs, shots, torch.Generator().manual_seed(0)).numpy()
    z_exact = sv.expectations(_torch_states("angle", feats, w)).numpy()
    se = np.sqrt(np.clip(1 - z_exact**2, 1e-12, None) / shots)
    # Two independent estimates of the same mean: their difference has sd sqrt(2) * se.
    assert np.all(np.abs(z_aer - z_ours) <= 5 * np.sqrt(2) * se + 1e-12)
    assert np.all(np.abs(z_aer - z_exact) <= 5 * se + 1e-12)


@pytest.mark.parametrize("shots", [16, 256, 4096])
def test_shot_spread_scales_as_one_over_sqrt_shots(shots):
    rng = np.random.default_rng(6)
    feats, w = _unit(rng, 1), rng.uniform(0, 6, size=(1, 8, 3))
    probs = sv.probabilities(_torch_states("amplitude", feats, w)).expand(4000, -1)
    z = sample_expectations(probs, shots, torch.Generator().manual_seed(1)).numpy()
    exact = sv.expectations(_torch_states("amplitude", feats, w)).numpy()[0]
    expected_sd = np.sqrt((1 - exact**2) / shots)
    assert np.allclose(z.std(0), expected_sd, rtol=0.1, atol=1e-3)
    assert np.all(np.abs(z.mean(0) - exact) <= 5 * expected_sd / np.sqrt(4000) + 1e-9)


@pytest.mark.parametrize("encoding", ["amplitude", "angle"])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_parameter_shift_exact_equals_autograd(encoding, n_layers):
    rng = np.random.default_rng(7)
    feats = torch.tensor(_features(encoding, rng, 4))
    enc = (sv.tree_alpha(feats) if encoding == "amplitude" else feats).detach().requires_grad_()
    w = torch.tensor(rng.uniform(0, 6, size=(n_layers, 8, 3)), requires_grad=True)
    grad_z = torch.tensor(rng.normal(size=(4, 8)))
    z = sv.expectations(sv.apply_layers(encode(encoding, enc), w))
    g_enc, g_w = torch.autograd.grad(z, (enc, w), grad_z)
    log = ExecutionLog()
    ps_w = weight_gradient(enc.detach(), w.detach(), encoding, grad_z, None, None, log)
    ps_enc = input_gradient(enc.detach(), w.detach(), encoding, grad_z, None, None, log)
    assert (ps_w - g_w).abs().max() <= 1e-8
    assert (ps_enc - g_enc).abs().max() <= 1e-8
    n_inputs = 255 if encoding == "amplitude" else 8
    assert log.circuits == 4 * 2 * (24 * n_layers + n_inputs)


def test_tree_shifts_are_the_circuits_a_device_runs():
    """A shifted Gray-code angle in the qiskit circuit prepares exactly our shifted amplitudes."""
    from workloads.quantum.parameter_shift import tree_shift_states

    rng = np.random.default_rng(8)
    x = _unit(rng, 1)
    theta = circuits.tree_theta(x)[0]
    shifted = tree_shift_states(sv.tree_alpha(torch.tensor(x))).numpy()[0]
    qc = circuits.amplitude_tree()
    for i in (0, 1, 2, 5, 100, 254):
        for s, sign in enumerate((1, -1)):
            t = theta.copy()
            t[i] += sign * np.pi / 2
            ref = Statevector(qc.assign_parameters(t)).data.real
            assert np.abs(shifted[i, s] - ref).max() <= 1e-10


def test_shot_gradient_is_unbiased():
    rng = np.random.default_rng(9)
    feats = torch.tensor(_unit(rng, 2))
    alpha = sv.tree_alpha(feats).detach()
    w = torch.tensor(rng.uniform(0, 6, size=(1, 8, 3)))
    grad_z = torch.tensor(rng.normal(size=(2, 8)))
    exact = weight_gradient(alpha, w, "amplitude", grad_z, None, None, ExecutionLog())
    runs = 200
    gen = torch.Generator().manual_seed(2)
    samples = torch.stack([weight_gradient(alpha, w, "amplitude", grad_z, 256, gen, ExecutionLog()) for _ in range(runs)])
    se = samples.std(0) / np.sqrt(runs)
    z = ((samples.mean(0) - exact) / se.clamp_min(1e-12)).abs()
    assert z.max() < 5.0
    assert samples.std(0).max() > 0  # shots really add noise


def test_shot_expectation_counts_a_device_cost():
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.uniform(0, np.pi, size=(3, 8)), requires_grad=True)
    w = torch.tensor(rng.uniform(0, 6, size=(2, 8, 3)), requires_grad=True)
    log = ExecutionLog()
    z = ShotExpectation.apply(x, w, "angle", 100, torch.Generator().manual_seed(0), log)
    z.sum().backward()
    assert log.circuits == 3 * (1 + 2 * 48 + 2 * 8)
    assert log.shots == 100 * log.circuits
    assert x.grad is not None and w.grad is not None


@pytest.mark.parametrize("side", [28, 8])
def test_hqnn_inference_front_end_equals_conv2d(side):
    """The banded convolution of large inference batches agrees with conv2d -> ReLU -> max-pool."""
    from workloads.models import build_model
    from workloads.models.modules import BANDED_CHUNK, BANDED_MIN_ROWS, conv_relu_pool

    model = build_model("hqnn-l1", 3, image_side=side)
    x = torch.rand(BANDED_CHUNK + 5, 1, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert (conv_relu_pool(model.features[0], x) - model.features[:4](x)).abs().max() < 1e-12
        fast = model(x)
    slow = model(x).detach()  # grad mode: conv2d
    assert len(x) >= BANDED_MIN_ROWS and (fast - slow).abs().max() < 1e-12


def test_kernel_tables_built_in_inference_mode_still_enter_autograd():
    """`_Ansatz` runs in inference mode; the constant tables it caches there must stay usable by autograd."""
    tables = [sv.ring_permutation, sv.z_signs, sv._u3_tables, sv.ring_gathers, sv._final_signs, sv._partial_traces,
              sv._gradient_tables]
    for table in tables:
        table.cache_clear()
    rng = np.random.default_rng(6)
    x = torch.tensor(_unit(rng, 3))
    w = torch.tensor(rng.uniform(0, 6, size=(2, 8, 3)), requires_grad=True)
    sv.ansatz_expectations(x, w).sum().backward()  # builds every table inside inference mode
    built = sv._u3_tables(torch.float64) + sv._final_signs(torch.float64) + sv._gradient_tables(torch.float64)
    assert not any(t.is_inference() for t in built)
    w2 = w.detach().clone().requires_grad_()
    sv.expectations(sv.apply_layers(x, w2)).sum().backward()  # autograd through the same tables
    assert (w.grad - w2.grad).abs().max() <= 1e-12
