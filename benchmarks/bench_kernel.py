"""qnn-l5 training steps in one process, in alternating blocks: the kernel against its own code at a git revision,
and the generic compiled executor against the kernel.

Each block is 32 steps (batch 32, the recipe's SGD) of one side; the sides alternate, and the ratio of each pair of
neighbouring blocks is taken, so that both sides of every ratio share the same seconds of a shared machine. Prints
the median of the paired ratios and the ratio of the fastest blocks. The revision's `statevector.py` is loaded from
git as its own module, so only the kernel differs (model, head, loss and optimizer are today's). One thread,
float64, exact.
Run: python benchmarks/bench_kernel.py [--rev 4de309e] [--blocks 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_simulator import _CompiledQNN, _training_data  # noqa: E402


def kernel_at(rev: str):
    """`workloads.quantum.statevector` as it was at `rev`, imported as a module of the same package."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:workloads/quantum/statevector.py"],
                            capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "statevector_at_rev.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("workloads.quantum.statevector_at_rev", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # its relative imports resolve inside workloads.quantum
    return module


def stepper(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, before: Callable[[], None] = lambda: None):
    """A block of 32 training steps of `model`, timed; `before` runs first (outside the timing)."""
    from workloads.hparams import model_defaults
    from workloads.models.training import sgd

    opt, gen = sgd(model, model_defaults("qnn-l5")), torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(y), generator=gen)[:32] for _ in range(32)]

    def block() -> float:
        before()
        start = time.perf_counter()
        for idx in batches:
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return time.perf_counter() - start
    return block


def paired(a: Callable[[], float], b: Callable[[], float], blocks: int) -> tuple[float, float, float, float]:
    """(median of a/b over neighbouring blocks, ratio of the fastest blocks, a's fastest, b's fastest)."""
    for _ in range(3):
        a(), b()
    ta, tb = [], []
    for i in range(blocks):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t1, t2 = first(), second()
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return statistics.median(p / q for p, q in zip(ta, tb)), min(ta) / min(tb), min(ta), min(tb)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD~1", help="git revision whose kernel to compare against")
    ap.add_argument("--blocks", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import workloads.models.modules as modules
    from workloads.models import build_model
    from workloads.quantum import statevector

    x, y = _training_data("qnn-l5")
    old = kernel_at(args.rev)

    def use(kernel) -> Callable[[], None]:
        return lambda: setattr(modules, "ansatz_expectations", kernel.ansatz_expectations)

    today, then = (stepper(build_model("qnn-l5", 0), x, y, use(k)) for k in (statevector, old))
    med, best, t_then, t_today = paired(then, today, args.blocks)
    print(f"qnn-l5 step, kernel at {args.rev} / today's: median of {args.blocks} paired blocks {med:.3f}x, fastest "
          f"blocks {best:.3f}x ({t_then / 32 * 1e3:.2f} ms against {t_today / 32 * 1e3:.2f} ms a step)")
    reference = build_model("qnn-l5", 0)
    kernel, compiled = stepper(reference, x, y, use(statevector)), stepper(_CompiledQNN(reference), x, y)
    med, best, t_c, t_k = paired(compiled, kernel, args.blocks)
    print(f"qnn-l5 step, compiled executor / kernel: median of {args.blocks} paired blocks {med:.3f}x, fastest "
          f"blocks {best:.3f}x ({t_c / 32 * 1e3:.2f} ms against {t_k / 32 * 1e3:.2f} ms a step)")


if __name__ == "__main__":
    main()
