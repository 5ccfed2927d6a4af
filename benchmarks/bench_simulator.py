"""Simulator speed, measured side by side in one run: torch executor vs qiskit-aer vs Statevector.

Prints ratios; absolute times on a shared machine mean little. Run: python benchmarks/bench_simulator.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def forward_times(n_layers: int, n: int, n_statevector: int, repeat: int) -> dict[str, float]:
    from qiskit.quantum_info import SparsePauliOp, Statevector
    from qiskit_aer.primitives import EstimatorV2

    from workloads import circuits, statevector as sv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 256))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.uniform(0, 2 * np.pi, size=(n_layers, 8, 3))
    xt, wt = torch.tensor(x), torch.tensor(w)

    def torch_fwd():
        with torch.no_grad():
            return sv.expectations(sv.apply_layers(sv.amplitude_states(xt), wt))

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


def epoch_time(model_name: str = "qnn-l10") -> float:
    """Wall seconds of one exact training epoch."""
    from workloads.data import load_split
    from workloads.hparams import model_defaults
    from workloads.models import build_model, model_inputs
    from workloads.training import as_labels, fit

    split = load_split("mnist", 1000, 500, 0)
    model = build_model(model_name, 0)
    x, _ = model_inputs(model_name, split)
    return fit(model, x, as_labels(split.y_train), model_defaults(model_name), None, 0, epochs=1).seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--statevector-samples", type=int, default=200, help="per-sample Statevector runs, scaled to --samples")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"forward pass of {args.samples} samples, amplitude embedding + L layers, one core (torch threads = 1)")
    print(f"{'L':>3} {'torch ms':>9} {'aer ms':>9} {'statevector ms':>15} {'aer/torch':>10} {'statevector/torch':>18}")
    for n_layers in (5, 10):
        t = forward_times(n_layers, args.samples, args.statevector_samples, args.repeat)
        print(f"{n_layers:>3} {t['torch'] * 1e3:>9.1f} {t['aer'] * 1e3:>9.1f} {t['statevector'] * 1e3:>15.0f} "
              f"{t['aer'] / t['torch']:>10.1f} {t['statevector'] / t['torch']:>18.1f}")
    print(f"(statevector timed on {args.statevector_samples} samples and scaled to {args.samples})")
    print(f"qnn-l10 epoch, 1000 samples, batch 32, exact gradients, one thread: {epoch_time():.2f} s")


if __name__ == "__main__":
    main()
