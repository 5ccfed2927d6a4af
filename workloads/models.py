"""The QNN, the angle-encoded QNN and the hybrid HQNN as torch modules around one quantum layer."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .circuits import N_QUBITS
from .data import Split
from .parameter_shift import ExecutionLog, ShotExpectation, shift_circuits
from .registry import ModelSpec, model_spec
from .statevector import angle_states, ansatz_expectations, tree_alpha


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
    """Encoded features (amplitudes or angles) -> quantum layer -> Linear(8, 10)."""

    def __init__(self, spec: ModelSpec, n_classes: int = 10):
        super().__init__()
        self.quantum = QuantumLayer(spec.n_layers, spec.encoding)
        self.head = nn.Linear(N_QUBITS, n_classes, dtype=torch.float64)

    def encoded(self, x: torch.Tensor) -> torch.Tensor:
        """What the quantum layer encodes: unit amplitudes (256) or RY angles (8)."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.encoded(x)))


class HQNN(nn.Module):
    """Conv front end -> 256 dims -> L2-normalised amplitudes -> quantum layer -> Linear(8, 10)."""

    def __init__(self, spec: ModelSpec, image_side: int = 28, n_classes: int = 10):
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
        self.quantum = QuantumLayer(spec.n_layers, spec.encoding)
        self.head = nn.Linear(N_QUBITS, n_classes, dtype=torch.float64)

    def encoded(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.encoded(x)))


def build_model(name: str, seed: int, image_side: int = 28) -> nn.Module:
    """A freshly initialised model; every initial weight flows from `seed`."""
    spec = model_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HQNN(spec, image_side) if spec.family == "hqnn" else QNN(spec)


def input_view(name: str) -> str:
    """Which view of a `Split` the model consumes: images (HQNN), amplitudes or angles."""
    spec = model_spec(name)
    if spec.family == "hqnn":
        return "images"
    return "angle" if spec.encoding == "angle" else "amp"


def role_inputs(name: str, split: Split, role: str) -> torch.Tensor:
    """The inputs of one data role (train, test, attack, eval) in the form the model consumes."""
    return split.inputs(input_view(name), role)


def model_inputs(name: str, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """(train inputs, test inputs) in the form the model consumes."""
    return role_inputs(name, split, "train"), role_inputs(name, split, "test")


def quantum_layer(model: nn.Module) -> QuantumLayer:
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
