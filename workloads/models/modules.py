"""The QNN and the hybrid HQNN as torch modules around one quantum layer: the hand-written kernel's
(`QuantumLayer`) or a compiled circuit's (`workloads.quantum.circuit_model.CircuitLayer`)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..quantum.circuits import N_QUBITS
from ..quantum.parameter_shift import ExecutionLog, ShotExpectation, shift_circuits
from ..quantum.statevector import angle_states, ansatz_expectations, tree_alpha


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "qnn" (encoded features -> circuit -> Linear) or "hqnn" (CNN front end)
    n_layers: int  # the kernel's layers; a compiled circuit's: kernel layers with as many weights (for the cost models)
    encoding: str  # "amplitude" | "angle": the data view the model reads
    circuit: str | None = None  # a compiled circuit's ref (workloads/models/circuit.py); None where the kernel runs it


class QuantumLayer(nn.Module):
    """Encoding + L-layer ansatz -> the 8 <Z_j>, exact (adjoint gradients) or estimated with `shots`.

    `shots` is None for exact; with shots, the forward pass samples S shots and the backward
    pass runs the parameter-shift circuits, every one with S shots (docs/methods.md).
    """

    def __init__(self, n_layers: int, encoding: str):
        super().__init__()
        self.encoding = encoding
        self.weight = nn.Parameter(torch.rand(n_layers, N_QUBITS, 3, dtype=torch.float64) * 2 * math.pi)
        self.shots: int | None = None
        self.generator: torch.Generator | None = None
        self.log = ExecutionLog()

    @property
    def n_outputs(self) -> int:
        return N_QUBITS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shots is None:
            states = x if self.encoding == "amplitude" else angle_states(x)
            self.log.add(x.shape[0], None)
            z = ansatz_expectations(states, self.weight)
            if z.requires_grad:  # autograd stands in for the shift circuits a device would run
                n = shift_circuits(x.shape[0], self.weight.numel(), self.encoding, self.weight.requires_grad,
                                   x.requires_grad)
                log = self.log
                z.register_hook(lambda g: (log.add_device_only(n), g)[1])
            return z
        enc = tree_alpha(x) if self.encoding == "amplitude" else x
        return ShotExpectation.apply(enc, self.weight, self.encoding, self.shots, self.generator, self.log)


class QNN(nn.Module):
    """Encoded features (amplitudes or angles) -> quantum layer -> Linear(outputs, 10).

    `quantum` builds the layer; it is called where the layer's weights are drawn, after any front end's."""

    def __init__(self, quantum: Callable[[], nn.Module], n_classes: int = 10):
        super().__init__()
        self.quantum = quantum()
        self.head = nn.Linear(self.quantum.n_outputs, n_classes, dtype=torch.float64)

    def encoded(self, x: torch.Tensor) -> torch.Tensor:
        """What the quantum layer encodes: unit amplitudes (256) or RY angles (8)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.encoded(x)))


# Inference of at least BANDED_MIN_ROWS images runs the HQNN's convolution as banded matrix products
# (`conv_relu_pool`), in chunks of BANDED_CHUNK images; smaller batches, and every pass that needs
# gradients, use torch's conv2d. Measured on one core, quiet, float64, conv -> ReLU -> max-pool of 28x28
# images: 64 images 7.7 ms with conv2d, 3.9 ms with one output row per window, 2.65 ms with the two rows
# of a pooled row per window (fewer, larger windows: a 6x8 window feeds 40 outputs, and the max-pool is a
# max over four column slices); 1000 images 205, 85 and 54 ms. Chunks of 32: 16, 64, 128 and 1000 took
# 67, 58, 60 and 59 ms. Wider windows waste more of the band on zeros.
BANDED_MIN_ROWS = 32
BANDED_CHUNK = 32
BANDED_BLOCK = 4  # output columns per window; a window spans the two output rows of one pooled row


def conv_relu_pool(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv -> ReLU -> 2x2 max-pool -> flatten of (n, 1, s, s) images (s a multiple of 4, 'same' padding),
    as the HQNN's front end computes them, without autograd.

    torch's float64 conv2d has no fast CPU kernel. Here each (k + 1) x (BANDED_BLOCK + k - 1) window of the
    padded image (a strided view, copied once by the product), which covers a 2 x BANDED_BLOCK block of
    outputs, times one banded matrix gives the block's four pool members side by side. The max-pool runs
    before the bias and the ReLU, which commute with it exactly (both are monotone, and rounding x + b is
    monotone in x)."""
    return torch.cat([_conv_relu_pool(conv, x[i: i + BANDED_CHUNK]) for i in range(0, len(x), BANDED_CHUNK)])


def _conv_relu_pool(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    n, s, k, c, pad, blk = len(x), x.shape[-1], conv.kernel_size[0], conv.out_channels, conv.padding[0], BANDED_BLOCK
    side, width, nb = s + 2 * pad, BANDED_BLOCK + k - 1, s // BANDED_BLOCK
    padded = F.pad(x[:, 0], (pad, pad, pad, pad))
    windows = padded.as_strided((n, s // 2, nb, k + 1, width), (side * side, 2 * side, blk, side, 1))
    out = (windows.reshape(-1, (k + 1) * width) @ _banded(conv.weight)).view(-1, 4, c * blk // 2)
    pooled = torch.maximum(torch.maximum(out[:, 0], out[:, 1]), torch.maximum(out[:, 2], out[:, 3]))
    pooled = (pooled + conv.bias.repeat_interleave(blk // 2)).clamp_min_(0)
    return pooled.view(n, s // 2, nb, c, blk // 2).permute(0, 3, 1, 2, 4).reshape(n, -1)


def conv_relu_pool_many(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`conv_relu_pool` for K models at once, differentiable: weight (K, c, 1, k, k), bias (K, c), images
    (K, n, 1, s, s) -> (K, n, c * (s/2)^2). One batched product of every model's windows by its banded
    matrix; K = 8 models of 64 images took 11 ms as one grouped float64 convolution (torch's slow path)."""
    kk, n, s = len(weight), x.shape[1], x.shape[-1]
    k, c, pad, blk = weight.shape[-1], weight.shape[1], (weight.shape[-1] - 1) // 2, BANDED_BLOCK
    side, width, nb = s + 2 * pad, BANDED_BLOCK + k - 1, s // BANDED_BLOCK
    padded = F.pad(x.reshape(kk * n, s, s), (pad, pad, pad, pad))
    windows = padded.as_strided((kk * n, s // 2, nb, k + 1, width), (side * side, 2 * side, blk, side, 1))
    band = (weight.reshape(kk, -1) @ _band_map(c, k, weight.dtype)).reshape(kk, (k + 1) * width, -1)
    out = torch.bmm(windows.reshape(kk, -1, (k + 1) * width), band).view(kk, -1, c * blk // 2, 4)
    pooled = out.max(dim=-1).values  # its backward scatters to one index; torch.maximum's took 5x as long
    pooled = F.relu(pooled + bias.repeat_interleave(blk // 2, dim=1).unsqueeze(1))
    return pooled.view(kk, n, s // 2, nb, c, blk // 2).permute(0, 1, 4, 2, 3, 5).reshape(kk, n, -1)


@lru_cache(maxsize=8)
def _band_map(c: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(c * k * k, band entries) 0/1 matrix: flat weights -> `_banded`'s matrix (its columns reordered to
    channel, pooled column, pool member) as a product, whose gradient is one more product (the gather's
    scatter-add backward took twice the rest of the step)."""
    index, valid = _banded_index(c, k)
    out = torch.zeros(c * k * k, index.numel(), dtype=dtype)
    cols = torch.arange(index.numel())[valid.reshape(-1)]
    out[index.reshape(-1)[cols], cols] = 1.0
    # The four pool members of an output last, so that the max-pool reduces a contiguous axis.
    return out.view(c * k * k, -1, 4, c * BANDED_BLOCK // 2).transpose(-1, -2).reshape(c * k * k, -1)


def _banded(weight: torch.Tensor) -> torch.Tensor:
    """((k + 1) * width, 4 * c * BANDED_BLOCK / 2): row (r, col) of the window, column (pool member dy, dx;
    channel ch; pooled column j) holds weight[ch, 0, r - dy, col - 2j - dx] where that is inside the kernel."""
    c, _, k, _ = weight.shape
    index, valid = _banded_index(c, k)
    return (weight.reshape(-1)[index] * valid.to(weight.dtype)).reshape((k + 1) * (BANDED_BLOCK + k - 1), -1)


@lru_cache(maxsize=8)
def _banded_index(c: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r, col, dy, dx, ch, j = torch.meshgrid(torch.arange(k + 1), torch.arange(BANDED_BLOCK + k - 1), torch.arange(2),
                                           torch.arange(2), torch.arange(c), torch.arange(BANDED_BLOCK // 2),
                                           indexing="ij")
    a, b = r - dy, col - 2 * j - dx
    return ch * k * k + a.clamp(0, k - 1) * k + b.clamp(0, k - 1), (a >= 0) & (a < k) & (b >= 0) & (b < k)


class HQNN(nn.Module):
    """Conv front end -> 256 dims -> L2-normalised amplitudes -> quantum layer -> Linear(outputs, 10)."""

    def __init__(self, quantum: Callable[[], nn.Module], image_side: int = 28, n_classes: int = 10):
        super().__init__()
        pooled = image_side // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, 5, kernel_size=5, padding=2, dtype=torch.float64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(5 * pooled * pooled, 256, dtype=torch.float64),
            nn.LeakyReLU(0.01),
        )
        self.quantum = quantum()
        self.head = nn.Linear(self.quantum.n_outputs, n_classes, dtype=torch.float64)

    def encoded(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or len(x) < BANDED_MIN_ROWS or x.shape[-1] % BANDED_BLOCK:
            h = self.features(x)
        else:
            h = self.features[4:](conv_relu_pool(self.features[0], x))
        return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.encoded(x)))


def quantum_layer(model: nn.Module) -> nn.Module:
    """The model's quantum layer: a `QuantumLayer` or a compiled circuit's `CircuitLayer`."""
    return model.quantum  # type: ignore[return-value]


@contextmanager
def shots_mode(model: nn.Module, shots: int | None, generator: torch.Generator | None) -> Iterator[ExecutionLog]:
    """Run the quantum layer at `shots` (None: exact) within the block; yields its execution log."""
    q = quantum_layer(model)
    saved = (q.shots, q.generator, q.log)
    q.shots, q.generator, q.log = shots, generator, ExecutionLog()
    try:
        yield q.log
    finally:
        q.shots, q.generator, q.log = saved
