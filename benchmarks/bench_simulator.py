"""Simulator and training speed, measured side by side in one run, on one core (torch threads = 1).

Prints, for the exact float64 executor:
- forward passes against qiskit-aer and qiskit's Statevector;
- one training epoch (1000 MNIST samples) of qnn-l5, qnn-l10 and hqnn-l1, and of the same qnn-l5 in
  PennyLane (default.qubit, broadcasting, backprop) when it is installed (an optional extra for this
  benchmark only, never a dependency of the project);
- the physical floor: the epoch's FLOPs at this core's float64 rate, measured here with a large matmul.
- one qnn-l5 epoch on the generic compiled executor (any qiskit circuit) against the hand-written
  kernel, same loop and seed, and the weights' difference after it (`--compiled-only` for just this);
With `--baseline DIR` (a checkout of another commit) its epochs are timed too, alternating with ours.
Every time is the best of `--repeat`; on a shared machine compare ratios, not absolute seconds.
Run: python benchmarks/bench_simulator.py [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
EPOCH_MODELS = ("qnn-l5", "qnn-l10", "hqnn-l1")
N_TRAIN = 1000


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def flop_rate(n: int = 2000, repeat: int = 5) -> float:
    """float64 FLOP/s of one core on a large matrix product."""
    a, b = torch.rand(n, n, dtype=torch.float64), torch.rand(n, n, dtype=torch.float64)
    return 2 * n**3 / _best(lambda: a @ b, repeat)


def circuit_flops(n_layers: int) -> float:
    """Real FLOPs of one sample's exact training step through the ansatz, gate by gate.

    A U3 on one qubit is 128 complex 2x2 matrix-vector products (4 multiplications and 2 additions
    each: 28 real FLOPs); the CNOT ring is a permutation (none). The adjoint backward applies every
    gate's inverse to the state and to the adjoint vector and contracts one derivative per gate:
    about twice the forward, so three forwards in all.
    """
    return 3 * n_layers * 8 * 128 * 28


def classical_flops(model: str) -> float:
    """Real FLOPs of one sample's training step through the HQNN front end (forward + 2x backward)."""
    if not model.startswith("hqnn"):
        return 0.0
    conv = 28 * 28 * 5 * 25  # 5x5 kernels, 5 channels, 28x28 outputs
    linear = 5 * 14 * 14 * 256
    return 3 * 2 * (conv + linear)


def epoch_flops(model: str) -> float:
    from workloads.models import model_spec

    return N_TRAIN * (circuit_flops(model_spec(model).n_layers) + classical_flops(model))


def forward_times(n_layers: int, n: int, n_statevector: int, repeat: int) -> dict[str, float]:
    from qiskit.quantum_info import SparsePauliOp, Statevector
    from qiskit_aer.primitives import EstimatorV2

    from workloads.quantum import circuits, statevector as sv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 256))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.uniform(0, 2 * np.pi, size=(n_layers, 8, 3))
    xt, wt = torch.tensor(x), torch.tensor(w)

    def torch_fwd():
        with torch.no_grad():
            return sv.expectations(sv.apply_layers(xt, wt))

    qc = circuits.model_circuit("amplitude", n_layers)
    values = circuits.parameter_values("amplitude", x, w)
    labels = ["I" * (7 - j) + "Z" + "I" * j for j in range(8)]  # rightmost character is qubit 0
    obs = [SparsePauliOp(label) for label in labels]
    estimator = EstimatorV2(options={"default_precision": 0.0})

    def aer_fwd():
        # One PUB: the circuit, 8 observables broadcast against n parameter sets.
        return estimator.run([(qc, np.array(labels).reshape(8, 1), values)]).result()[0].data.evs

    def sv_fwd():
        for vals in values[:n_statevector]:
            sv_ = Statevector(qc.assign_parameters(vals))
            [sv_.expectation_value(o) for o in obs]

    z_t = torch_fwd().numpy()
    z_a = np.asarray(aer_fwd()).T
    assert np.abs(z_t - z_a).max() < 1e-6, "torch and aer disagree"
    t_torch = _best(torch_fwd, repeat)
    t_aer = _best(aer_fwd, 1)
    t_sv = _best(sv_fwd, 1) * n / n_statevector
    return {"torch": t_torch, "aer": t_aer, "statevector": t_sv}


def _training_data(model_name: str):
    from workloads.data import load_split
    from workloads.models import model_inputs
    from workloads.models.training import as_labels

    split = load_split("mnist", N_TRAIN, 500, 0)
    x, _ = model_inputs(model_name, split)
    return x, as_labels(split.y_train)


def epoch_time(model_name: str) -> float:
    """Wall seconds of one exact training epoch, as `fit` reports them."""
    from workloads.hparams import model_defaults
    from workloads.models import build_model
    from workloads.models.training import fit

    x, y = _training_data(model_name)
    return fit(build_model(model_name, 0), x, y, model_defaults(model_name), None, 0, epochs=1).seconds


def epoch_time_in(checkout: Path, model_name: str) -> float:
    """`epoch_time` of another checkout's code, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, __file__, "--epoch", model_name], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def pennylane_epoch(n_layers: int = 5) -> float | None:
    """qnn-l5's circuit and recipe in PennyLane: default.qubit, batch broadcasting, backprop, float64."""
    try:
        import pennylane as qml
    except ImportError:
        return None
    from workloads.hparams import model_defaults
    from workloads.models.training import batches, sgd

    x, y = _training_data("qnn-l5")
    dev = qml.device("default.qubit", wires=8)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(inputs, weights):
        qml.AmplitudeEmbedding(inputs, wires=range(8))
        for layer in range(n_layers):
            for q in range(8):
                qml.U3(weights[layer, q, 0], weights[layer, q, 1], weights[layer, q, 2], wires=q)
            for q in range(8):
                qml.CNOT(wires=[q, (q + 1) % 8])
        return [qml.expval(qml.PauliZ(q)) for q in range(8)]

    weights = torch.nn.Parameter(torch.rand(n_layers, 8, 3, dtype=torch.float64) * 2 * np.pi)
    head = torch.nn.Linear(8, 10, dtype=torch.float64)
    model = torch.nn.ModuleDict({"head": head})
    model.register_parameter("weights", weights)
    recipe = model_defaults("qnn-l5")
    opt = sgd(model, recipe)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for idx in batches(len(y), recipe["batch_size"], gen):
        opt.zero_grad()
        z = torch.stack(circuit(x[idx], weights), dim=1)
        torch.nn.functional.cross_entropy(head(z), y[idx]).backward()
        opt.step()
    return time.perf_counter() - start


class _CompiledQNN(torch.nn.Module):
    """qnn-l5 on the generic compiled executor: amplitude states -> the ansatz circuit -> Linear(8, 10)."""

    def __init__(self, model: torch.nn.Module):
        from workloads.quantum import circuits
        from workloads.quantum.compiled import compile_circuit

        super().__init__()
        self.circuit = compile_circuit(circuits.ansatz(model.quantum.weight.shape[0]), None, "w")
        self.weight = torch.nn.Parameter(model.quantum.weight.detach().reshape(-1).clone())
        self.head = torch.nn.Linear(8, 10, dtype=torch.float64)
        self.head.load_state_dict(model.head.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.circuit.expectations(None, self.weight, initial_state=x))


def compiled_epochs(repeat: int) -> tuple[float, float, float]:
    """(hand-written kernel s, compiled executor s, max weight difference after the epoch): one exact
    qnn-l5 epoch each, same data, seed, recipe and loop, alternating, best of `repeat`."""
    from torch.nn import functional as F

    from workloads.hparams import model_defaults
    from workloads.models import build_model
    from workloads.models.training import batches, sgd

    x, y = _training_data("qnn-l5")
    recipe = model_defaults("qnn-l5")

    def epoch(model: torch.nn.Module) -> float:
        opt, gen = sgd(model, recipe), torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for idx in batches(len(y), recipe["batch_size"], gen):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return time.perf_counter() - start

    hand, generic, diff = [], [], 0.0
    for _ in range(repeat):
        ref = build_model("qnn-l5", 0)
        twin = _CompiledQNN(ref)
        hand.append(epoch(ref))
        generic.append(epoch(twin))
        diff = max(diff, float((ref.quantum.weight.detach().reshape(-1) - twin.weight.detach()).abs().max()))
    return min(hand), min(generic), diff


def print_compiled(repeat: int) -> None:
    hand, generic, diff = compiled_epochs(repeat)
    print(f"\nqnn-l5 epoch, generic compiled executor (workloads/quantum/compiled.py) vs the hand-written kernel, "
          f"best of {repeat}:\n  kernel {hand:.3f} s, compiled {generic:.3f} s, ratio {generic / hand:.2f}x; "
          f"weights after the epoch differ by {diff:.1e}")
    try:
        import torchquantum  # noqa: F401
    except ImportError:
        print("  TorchQuantum: not installed (its release pins qiskit<1 and another torch)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--statevector-samples", type=int, default=200, help="per-sample Statevector runs, scaled to --samples")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--baseline", type=Path, help="a checkout of another commit: time its epochs too, alternating")
    p.add_argument("--skip-forward", action="store_true", help="skip the forward-pass comparison with qiskit")
    p.add_argument("--compiled-only", action="store_true",
                   help="only the compiled executor's qnn-l5 epoch against the hand-written kernel")
    p.add_argument("--epoch", help=argparse.SUPPRESS)  # internal: print one epoch time as JSON
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.epoch:
        print(json.dumps({"seconds": epoch_time(args.epoch)}))
        return
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rate = flop_rate()
    print(f"float64 matmul on one core: {rate / 1e9:.1f} GFLOP/s")

    if args.compiled_only:
        print_compiled(args.repeat)
        return
    if not args.skip_forward:
        print(f"\nforward pass of {args.samples} samples, amplitude embedding + L layers")
        print(f"{'L':>3} {'torch ms':>9} {'aer ms':>9} {'statevector ms':>15} {'aer/torch':>10} {'statevector/torch':>18}")
        for n_layers in (5, 10):
            t = forward_times(n_layers, args.samples, args.statevector_samples, args.repeat)
            print(f"{n_layers:>3} {t['torch'] * 1e3:>9.1f} {t['aer'] * 1e3:>9.1f} {t['statevector'] * 1e3:>15.0f} "
                  f"{t['aer'] / t['torch']:>10.1f} {t['statevector'] / t['torch']:>18.1f}")
        print(f"(statevector timed on {args.statevector_samples} samples and scaled to {args.samples})")

    print(f"\none exact training epoch ({N_TRAIN} MNIST samples, the model's batch size), best of {args.repeat}")
    ours: dict[str, list[float]] = {m: [] for m in EPOCH_MODELS}
    base: dict[str, list[float]] = {m: [] for m in EPOCH_MODELS}
    for _ in range(args.repeat):
        for m in EPOCH_MODELS:
            ours[m].append(epoch_time_in(ROOT, m))
            if args.baseline:
                base[m].append(epoch_time_in(args.baseline, m))
    head = f"{'model':>8} {'epoch s':>8} {'floor s':>8} {'of floor':>9}"
    print(head + (f" {'baseline s':>11} {'speed-up':>9}" if args.baseline else ""))
    for m in EPOCH_MODELS:
        t, floor = min(ours[m]), epoch_flops(m) / rate
        line = f"{m:>8} {t:>8.3f} {floor:>8.3f} {floor / t:>8.1%}"
        if args.baseline:
            line += f" {min(base[m]):>11.3f} {min(base[m]) / t:>8.2f}x"
        print(line)
    print("(floor: the gate-by-gate FLOPs of forward and adjoint backward, plus the HQNN's convolution and\n"
          " linear layer, at the matmul rate above; `of floor` = floor / epoch)")

    print_compiled(args.repeat)
    qnn = min(ours["qnn-l5"])
    peer = pennylane_epoch()
    if peer is None:
        print("PennyLane: not installed, skipped (pip install pennylane)")
    else:
        peer = min(peer, pennylane_epoch() or peer)
        print(f"PennyLane default.qubit qnn-l5 epoch: {peer:.3f} s, {peer / qnn:.1f}x ours")
    # TorchQuantum's release pins qiskit<1 and another torch; installing it would replace the project's.
    print("TorchQuantum: not measured here (its pins conflict with the project's qiskit and torch)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
