"""Many models at once, measured side by side in one run, on one core (torch threads = 1).

For each model and each K: K models (seeds 0..K-1, each its own initialisation and batch order) trained
for the given epochs on the same MNIST samples, once together by `train_many` and once one after the
other by `fit`. Prints both wall times, their ratio, and the largest difference in any weight between a
model trained together and the same model trained alone. With `--ulira`, U-LiRA's ulira stage (K shadows,
each unlearned on the forget samples it holds) with the shadows unlearned together (`unlearn_many`) and one
after the other, for each ascent method, and the largest difference in the shadows' confidences. Then
qnn-l5's single-model epoch against PennyLane (default.qubit, broadcasting, backprop) when it is installed,
as in bench_simulator.py.
Every time is the best of `--repeat`; on a shared machine compare ratios, not absolute seconds.
Run: python benchmarks/bench_many.py [--models hqnn-l1,qnn-l10] [--k 1,2,4,8,16,32] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _data(name: str, n: int):
    from workloads.data import load_split
    from workloads.models import model_inputs
    from workloads.models.training import as_labels

    split = load_split("mnist", n, 100, 0)
    return model_inputs(name, split)[0], as_labels(split.y_train)


def _together(name, k, data, recipe, epochs):
    from workloads.models import build_model
    from workloads.models.batched import train_many

    models = [build_model(name, s) for s in range(k)]
    start = time.perf_counter()
    train_many(models, [data] * k, recipe, list(range(k)), epochs=epochs)
    return time.perf_counter() - start, models


def _alone(name, k, data, recipe, epochs):
    from workloads.models import build_model
    from workloads.models.training import fit

    models = [build_model(name, s) for s in range(k)]
    start = time.perf_counter()
    for s, m in enumerate(models):
        fit(m, *data, recipe, None, s, epochs)
    return time.perf_counter() - start, models


def _max_diff(a, b) -> float:
    return max((p - q).abs().max().item() for x, y in zip(a, b) for p, q in zip(x.parameters(), y.parameters()))


def curve(name: str, ks: list[int], n: int, epochs: int, repeat: int) -> None:
    from workloads.hparams import model_defaults

    data, recipe = _data(name, n), model_defaults(name)
    print(f"\n{name}: {n} samples, batch {recipe['batch_size']}, {epochs} epoch(s) per model, best of {repeat}")
    warm = (data[0][:2 * recipe["batch_size"]], data[1][:2 * recipe["batch_size"]])
    _together(name, 2, warm, recipe, 1), _alone(name, 1, warm, recipe, 1)  # first calls pay lazy setup
    print(f"{'K':>3} {'together s':>11} {'one by one s':>13} {'speed-up':>9} {'per model s':>12} {'max |dw|':>9}")
    for k in ks:
        t_many, t_one, diff = float("inf"), float("inf"), 0.0
        for _ in range(repeat):  # alternate, so that a change in the machine's load hits both
            t, together = _together(name, k, data, recipe, epochs)
            t_many = min(t_many, t)
            t, alone = _alone(name, k, data, recipe, epochs)
            t_one = min(t_one, t)
            diff = max(diff, _max_diff(together, alone))
        print(f"{k:>3} {t_many:>11.2f} {t_one:>13.2f} {t_one / t_many:>8.2f}x {t_many / k:>12.3f} {diff:>9.1e}",
              flush=True)


def ulira(model: str, forget: str, methods: list[str], k: int, repeat: int) -> None:
    import workloads.unlearning as unlearning
    from workloads.stages import CellConfig, shadow_config, shadow_stage, ulira_stage

    base = CellConfig(model, forget, "none", None, None, None, 0, dataset="mnist", n_train=1000, n_test=500) \
        .with_params({"ulira": {"k": k}})
    start = time.perf_counter()
    shadows = shadow_stage(shadow_config(base)).state
    print(f"\nulira stage, {model} {forget}, {k} shadows (trained in {time.perf_counter() - start:.0f} s), "
          f"best of {repeat}")
    print(f"{'method':>12} {'together s':>11} {'one by one s':>13} {'speed-up':>9} {'max |d conf|':>13}")
    can = unlearning.unlearns_together
    for method in methods:
        cfg = replace(base, method=method)
        t_many, t_one, diff = float("inf"), float("inf"), 0.0
        for _ in range(repeat):
            unlearning.unlearns_together = can
            t0 = time.perf_counter()
            a = ulira_stage(cfg, shadows).state["ulira.conf"]
            t_many = min(t_many, time.perf_counter() - t0)
            unlearning.unlearns_together = lambda *_: False  # the shadows one after the other, as before
            t0 = time.perf_counter()
            b = ulira_stage(cfg, shadows).state["ulira.conf"]
            t_one = min(t_one, time.perf_counter() - t0)
            diff = max(diff, float((a - b).abs().max()))
        unlearning.unlearns_together = can
        print(f"{method:>12} {t_many:>11.2f} {t_one:>13.2f} {t_one / t_many:>8.2f}x {diff:>13.1e}", flush=True)


def peers(repeat: int) -> None:
    from bench_simulator import epoch_time, pennylane_epoch

    ours = [epoch_time("qnn-l5") for _ in range(repeat)]
    theirs = [pennylane_epoch() for _ in range(repeat)]
    print(f"\nqnn-l5, one exact epoch of one model (1000 samples, batch 32), best of {repeat}: ours "
          f"{min(ours):.3f} s (all: {', '.join(f'{t:.3f}' for t in ours)})")
    if theirs[0] is None:
        print("PennyLane: not installed, skipped (pip install pennylane)")
    else:
        best = min(t for t in theirs if t is not None)
        print(f"PennyLane default.qubit: {best:.3f} s, {best / min(ours):.1f}x ours")
    print("TorchQuantum: not measured (its release pins qiskit<1 and another torch; installing it would "
          "replace the project's)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="hqnn-l1,qnn-l10", help="comma-separated model names")
    p.add_argument("--k", default="1,2,4,8,16,32", help="comma-separated group sizes")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--skip-peers", action="store_true", help="skip qnn-l5 against PennyLane")
    p.add_argument("--ulira", default="", metavar="FORGET",
                   help="also time the ulira stage for this forget set (e.g. class:4) on the first --models model")
    p.add_argument("--ulira-k", type=int, default=8, help="shadows for --ulira (even)")
    p.add_argument("--ulira-methods", default="ga,graddiff,neggrad_plus,rga")
    args = p.parse_args(argv)
    try:
        ks = [int(k) for k in args.k.split(",") if k]
    except ValueError:
        p.error(f"--k: {args.k!r} is not a comma-separated list of integers")
    from workloads.models import MODELS

    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(1)
    print(f"load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    for name in args.models.split(","):
        if ks:
            curve(name, ks, args.samples, args.epochs, args.repeat)
    if args.ulira:
        ulira(args.models.split(",")[0], args.ulira, args.ulira_methods.split(","), args.ulira_k, args.repeat)
    if not args.skip_peers:
        peers(max(args.repeat, 3))
    print(f"load average at end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
