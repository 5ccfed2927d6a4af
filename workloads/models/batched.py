"""Many models of one architecture and recipe trained in lockstep, parameters stacked on a leading axis.

`train_many` trains K models as `fit` trains each alone: model k draws its mini-batches from its own
generator seeded with seeds[k], starts from its own initial weights (built by the caller, as for `fit`)
and takes the same SGD steps, so each ends equal to the model trained alone to rounding (1e-10 in every
weight is the contract; tests/test_train_many.py checks it). What is shared is the work per step: one
grouped convolution, one batched matrix product per linear layer and one batched statevector pass for all
K models, where K models trained one after the other pay every small operation's overhead K times.

Datasets may differ in size. Model k then takes its own number of steps per epoch, with its own last,
shorter batch; in a step where models' batches differ in size the short ones are padded with rows of
weight zero, and a model that has taken all its steps stays as it is while the others go on.
Training with shots (finite `shots`), and training models whose circuit the compiled executor runs (no
stacked kernel), runs each model alone through `fit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.func import stack_module_state
from torch.nn import functional as F

from ..quantum.parameter_shift import shift_circuits
from ..quantum.statevector import angle_states, ansatz_expectations
from .modules import BANDED_BLOCK, HQNN, QNN, QuantumLayer, conv_relu_pool_many
from .training import SGD, Cost, batches, fit

__all__ = ["StackedModels", "train_many"]

# The most models stacked at once; more train in stacks of this size, one after the other. One epoch of
# hqnn-l1 (benchmarks/bench_many.py, best of 2, 2026-12-03): 1.27x, 1.53x, 1.38x, 1.35x and 0.98x faster than
# one by one at K = 2, 4, 8, 16 and 32: beyond 4 the stacked Linear(980, 256) weights, their gradients and
# momenta (2 MB each per model) no longer fit the cache. qnn-l10: 1.03x, 1.13x, 1.19x, 1.23x and 1.04x.
STACK_LIMIT = {"hqnn": 4, "qnn": 16}


class StackedModels:
    """K models of one class and shape as one: every parameter stacked on a leading model axis.

    `logits(x)` takes inputs (K, rows, ...) (model k's rows in x[k]) and returns (K, rows, 10), the
    logits each model would give its rows alone. Gradients flow to the stacked leaf tensors in `params`.
    """

    def __init__(self, models: Sequence[nn.Module]):
        first = models[0]
        if not stackable(first) or any(type(m) is not type(first) for m in models):
            raise ValueError("train_many needs QNN or HQNN models on the hand-written kernel, all of one class")
        if first.quantum.encoding not in ("amplitude", "angle") or (
                isinstance(first, HQNN) and first.quantum.encoding != "amplitude"):
            raise ValueError(f"no batched executor for encoding {first.quantum.encoding!r}")
        params, _ = stack_module_state(list(models))
        self.params: dict[str, torch.Tensor] = params
        self.k = len(models)
        self.hybrid = isinstance(first, HQNN)
        self.encoding = first.quantum.encoding
        if self.hybrid:
            conv, pool, act = first.features[0], first.features[2], first.features[5]
            self.conv = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
            self.pool = pool.kernel_size
            # The banded kernel covers the built-in front end: odd kernel, 'same' padding, stride 1, pool 2.
            self.banded = (conv.stride == (1, 1) and conv.dilation == (1, 1) and pool.kernel_size == 2
                           and conv.kernel_size[0] == conv.kernel_size[1] == 2 * conv.padding[0] + 1)
            self.slope = act.negative_slope

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        z = ansatz_expectations(self._encoded(x), p["quantum.weight"])  # K models: a leading model axis
        return _linear(z, p["head.weight"], p["head.bias"])

    def _encoded(self, x: torch.Tensor) -> torch.Tensor:
        if self.hybrid:
            return self._features(x)
        if self.encoding == "angle":
            return angle_states(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
        return x

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """HQNN's front end for K models: the banded convolution of all K at once (`conv_relu_pool_many`) or
        one grouped convolution, then batched matrix products; x is (K, rows, 1, s, s)."""
        p, k, rows = self.params, self.k, x.shape[1]
        w = p["features.0.weight"]
        if self.banded and x.shape[-1] % BANDED_BLOCK == 0:
            h = conv_relu_pool_many(w, p["features.0.bias"], x)
        else:
            grouped = x.transpose(0, 1).reshape(rows, k * w.shape[2], *x.shape[-2:])
            h = F.conv2d(grouped, w.flatten(0, 1), p["features.0.bias"].flatten(), groups=k, **self.conv)
            h = F.max_pool2d(F.relu(h), self.pool).reshape(rows, k, -1).transpose(0, 1)
        h = F.leaky_relu(_linear(h, p["features.4.weight"], p["features.4.bias"]), self.slope)
        return h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def write_back(self, models: Sequence[nn.Module]) -> None:
        """Copy model k's trained parameters into models[k]."""
        with torch.no_grad():
            for k, model in enumerate(models):
                for name, param in model.named_parameters():
                    param.copy_(self.params[name][k])


def stackable(model: nn.Module) -> bool:
    """Whether `StackedModels` can stack the model: a QNN or HQNN whose quantum layer is the kernel's."""
    return isinstance(model, (QNN, HQNN)) and isinstance(model.quantum, QuantumLayer)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K linear layers at once: x (K, rows, in), weight (K, out, in), bias (K, out) -> (K, rows, out)."""
    return _ManyLinear.apply(x, weight, bias)


class _ManyLinear(torch.autograd.Function):
    """Batched linear layers with each gradient computed in its own tensor's layout: autograd's
    products for `baddbmm` gave the (K, 256, 980) weight gradient transposed (then copied into
    place) or multiplied by the transposed weight, each slower than the product itself."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x = x.contiguous()  # bmm falls back to a slow loop on strided batches (100x at 8 x 980)
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.mT)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        g_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return g_x, torch.bmm(grad.mT.contiguous(), x), grad.sum(1)


@dataclass(frozen=True)
class _Batch:
    rows: torch.Tensor  # (K, R) indices into the concatenated data, padded with a valid row
    weights: torch.Tensor  # (K, R): 1 / (model's batch size) on its rows, 0 on padding
    sizes: list[int]  # each model's batch size, 0 when it has finished
    active: torch.Tensor  # (K,) bool


def _model_batches(n: int, batch_size: int, seed: int, epochs: int) -> Iterator[torch.Tensor]:
    """The index batches `fit` draws for one model, epoch after epoch, from its own generator."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        yield from batches(n, batch_size, gen)


def _lockstep(sizes: list[int], batch_size: int, seeds: Sequence[int], epochs: int) -> Iterator[_Batch]:
    """Step by step, every model's next batch as rows of the concatenated datasets, until all are done."""
    offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
    streams = [_model_batches(n, batch_size, s, epochs) for n, s in zip(sizes, seeds)]
    while True:
        idx = [next(s, torch.empty(0, dtype=torch.long)) for s in streams]
        got = [len(i) for i in idx]
        if not any(got):
            return
        width = max(got)
        rows = torch.tensor(offsets).unsqueeze(1).repeat(1, width)  # padding: each model's first row
        weights = torch.zeros(len(idx), width, dtype=torch.float64)
        for k, i in enumerate(idx):
            rows[k, : got[k]] += i
            weights[k, : got[k]] = 1.0 / got[k] if got[k] else 0.0
        yield _Batch(rows, weights, got, torch.tensor(got) > 0)


def train_many(
    models: Sequence[nn.Module],
    datasets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    recipe: dict[str, Any],
    seeds: Sequence[int],
    shots: int | None = None,
    epochs: int | None = None,
) -> list[Cost]:
    """Train models[k] in place on datasets[k] = (x, y) with seed seeds[k], each as
    `fit(models[k], x, y, recipe, shots, seeds[k], epochs)` would, all K in lockstep.

    Returns each model's Cost: its own circuits, and seconds as its share (1/K) of the group's wall time.
    """
    if not (len(models) == len(datasets) == len(seeds)):
        raise ValueError(f"train_many: {len(models)} models, {len(datasets)} datasets and {len(seeds)} seeds")
    if shots is not None or not stackable(models[0]):  # each model alone, as fit trains it
        return [fit(m, x, y, recipe, shots, s, epochs) for m, (x, y), s in zip(models, datasets, seeds)]
    size = STACK_LIMIT["hqnn" if isinstance(models[0], HQNN) else "qnn"]
    if len(models) > size:
        return [c for i in range(0, len(models), size)
                for c in train_many(models[i:i + size], datasets[i:i + size], recipe, seeds[i:i + size], None, epochs)]
    stack = StackedModels(models)
    n_epochs = recipe["epochs"] if epochs is None else epochs
    opt = SGD(stack.params, recipe["lr"], recipe["momentum"], recipe.get("nesterov", False))
    x_all = torch.cat([x for x, _ in datasets])
    y_all = torch.cat([y for _, y in datasets])
    sizes = [len(y) for _, y in datasets]
    circuits = [0] * len(models)
    start = time.perf_counter()
    for batch in _lockstep(sizes, recipe["batch_size"], seeds, n_epochs):
        opt.zero_grad()
        logits = stack.logits(x_all[batch.rows])
        loss = F.cross_entropy(logits.flatten(0, 1), y_all[batch.rows].flatten(), reduction="none")
        (loss * batch.weights.flatten()).sum().backward()
        opt.step(batch.active)
        circuits = [c + n for c, n in zip(circuits, batch.sizes)]
    seconds = (time.perf_counter() - start) / len(models)
    stack.write_back(models)
    return [_cost(seconds, c, models[0]) for c in circuits]


def _cost(seconds: float, circuits: int, model: nn.Module) -> Cost:
    """What `fit`'s execution log records for one model: its forward circuits, and for the device the
    parameter-shift circuits of its gradients too (input gradients only behind the HQNN's front end)."""
    q = model.quantum
    shift = shift_circuits(circuits, q.weight.numel(), q.encoding, True, isinstance(model, HQNN))
    return Cost(seconds, circuits, 0, circuits + shift)
