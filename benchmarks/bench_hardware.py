"""Cost of evaluating on qiskit backends, per circuit: local wall seconds (simulation) and the estimated QPU
seconds on the device, with the transpiled two-qubit gate counts.

    python benchmarks/bench_hardware.py [--shots 128] [--circuits 4] [--backends aer,aer-noise,fake:FakeTorino]

The torch executor is the reference: it evaluates 1000 samples in milliseconds, a noisy fake backend takes
seconds per circuit (statevector trajectories, or a density matrix when few qubits are active).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, default=128)
    ap.add_argument("--circuits", type=int, default=4)
    ap.add_argument("--backends", default="aer,aer-noise,fake:FakeMelbourneV2,fake:FakeTorino")
    ap.add_argument("--models", default="qnn-angle-l2,hqnn-l1")
    args = ap.parse_args()

    from workloads.quantum import backends as wb
    from workloads.models import build_model
    from workloads.models import model_spec

    print(f"{'model':<14}{'backend':<24}{'2q':>6}{'depth':>7}{'active':>7}{'method':>16}"
          f"{'wall s/circ':>13}{'torch s/circ':>14}{'QPU s/circ est':>16}")
    for name in args.models.split(","):
        spec = model_spec(name)
        model = build_model(name, 0, 8)
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(args.circuits, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1 if spec.family == "hqnn"
             else torch.rand(args.circuits, 8, generator=g, dtype=torch.float64) * 3)
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        t_torch = (time.perf_counter() - t0) / args.circuits
        for backend in args.backends.split(","):
            t = wb.transpiled(spec.encoding, spec.n_layers, backend)
            q = wb.make_query(model, x, args.shots, backend, 0)
            wb.run_query(wb.make_query(model, x[:1], args.shots, backend, 0))  # warm: noise model, sampler
            t0 = time.perf_counter()
            wb.run_query(q)
            wall = (time.perf_counter() - t0) / args.circuits
            qpu = wb.qpu_seconds_estimate(backend, 1, args.shots, 0, t)
            method = wb.kind(backend).simulation(backend, t, args.shots)
            print(f"{name:<14}{backend:<24}{t.two_qubit_gates:>6}{t.depth:>7}{t.active_qubits:>7}{method:>16}"
                  f"{wall:>13.3f}{t_torch:>14.2e}{qpu:>16.3f}", flush=True)
    print(f"(shots {args.shots}, {args.circuits} circuits per backend; QPU estimate without the per-job "
          f"overhead of {wb.JOB_OVERHEAD_S} s)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
