"""The model registry: each model's architecture by name, and how to build one and feed it.

The built-in models are listed here. A grid's circuit models (its `models:` section) join the registry in
every process that plans or runs their stages (`use_circuit_models`, `register_circuit`), so that every
part that reads the registry by name (parameters, estimates, stages) takes them as it takes the built-ins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import Split
from . import circuit
from .modules import HQNN, QNN, ModelSpec, QuantumLayer, quantum_layer, shots_mode

MODELS: dict[str, ModelSpec] = {
    "qnn-l5": ModelSpec("qnn", 5, "amplitude"),
    "qnn-l10": ModelSpec("qnn", 10, "amplitude"),
    "hqnn-l1": ModelSpec("hqnn", 1, "amplitude"),
    "qnn-angle-l2": ModelSpec("qnn", 2, "angle"),
}
BUILTIN_MODELS = tuple(MODELS)

__all__ = ["BUILTIN_MODELS", "MODELS", "ModelSpec", "QuantumLayer", "build_model", "input_view", "measured_circuit",
           "model_inputs", "model_spec", "quantum_layer", "register_circuit", "role_inputs", "shots_mode",
           "use_circuit_models"]


def register_circuit(name: str, ref: str) -> None:
    """Put circuit model `name` (its ref, from `circuit.plan`) into the registry of this process."""
    if name in BUILTIN_MODELS:
        raise ValueError(f"models.{name}: {name!r} is a built-in model; give the circuit model another name")
    MODELS[name] = ModelSpec("qnn", circuit.equivalent_layers(ref), circuit.encoding(ref), ref)


def use_circuit_models(refs: dict[str, str]) -> None:
    """Make `refs` this process's circuit models: a grid loaded after another sees only its own."""
    for name in [n for n, s in MODELS.items() if s.circuit is not None and n not in refs]:
        del MODELS[name]
    for name, ref in refs.items():
        register_circuit(name, ref)


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
        if spec.circuit is not None:
            from ..quantum.circuit_model import CircuitQNN

            return CircuitQNN(circuit.built(name, spec.circuit))
        return HQNN(spec, image_side) if spec.family == "hqnn" else QNN(spec)


def measured_circuit(name: str) -> Any:
    """The model's circuit as the qiskit backends run it (a `workloads.quantum.backends.Measured`)."""
    from ..quantum.backends import builtin_measured
    from ..quantum.circuit_model import measured

    spec = model_spec(name)
    if spec.circuit is not None:
        return measured(circuit.built(name, spec.circuit))
    return builtin_measured(spec.encoding, spec.n_layers)


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
