"""The model registry: each built-in model's architecture by name, and how to build one and feed it."""

from __future__ import annotations

import torch
from torch import nn

from ..data import Split
from .modules import HQNN, QNN, ModelSpec, QuantumLayer, quantum_layer, shots_mode

MODELS: dict[str, ModelSpec] = {
    "qnn-l5": ModelSpec("qnn", 5, "amplitude"),
    "qnn-l10": ModelSpec("qnn", 10, "amplitude"),
    "hqnn-l1": ModelSpec("hqnn", 1, "amplitude"),
    "qnn-angle-l2": ModelSpec("qnn", 2, "angle"),
}

__all__ = ["MODELS", "ModelSpec", "QuantumLayer", "build_model", "input_view", "model_inputs", "model_spec",
           "quantum_layer", "role_inputs", "shots_mode"]


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


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
