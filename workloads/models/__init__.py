"""The model registry: each model's architecture by name, and how to build one and feed it.

The built-in models are the members of `workloads.models.builtin`, one module each. A grid's circuit models
(its `models:` section) join the registry in every process that plans or runs their stages
(`use_circuit_models`, `register_circuit`), so that every part that reads the registry by name (parameters,
estimates, stages) takes them as it takes the built-ins.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..data import Split
from . import circuit
from .builtin import BUILTINS, FAMILIES
from .modules import HQNN, QNN, ModelSpec, QuantumLayer, quantum_layer, shots_mode


def builtin_spec(member: ModuleType) -> ModelSpec:
    """A built-in model's spec: its kernel's layers, or, for a member without a kernel, its circuit planned
    (compiled and checked against qiskit's Statevector) as a grid's circuit model is."""
    if member.FAMILY not in FAMILIES:
        raise TypeError(f"{member.__name__}: FAMILY {member.FAMILY!r} is not one of {', '.join(FAMILIES)}")
    encoding = "amplitude" if member.ENTRY.get("encoding", "angle") == "amplitude" else "angle"
    if member.FAMILY == "hqnn" and encoding != "amplitude":  # the front end's 256 outputs are amplitudes
        raise TypeError(f"{member.__name__}: an hqnn model's ENTRY needs encoding: amplitude")
    if member.FAST_LAYERS is not None:
        return ModelSpec(member.FAMILY, member.FAST_LAYERS, encoding)
    ref = circuit.plan(member.NAME, member.ENTRY, ())
    return ModelSpec(member.FAMILY, circuit.equivalent_layers(ref), encoding, ref)


MODELS: dict[str, ModelSpec] = {name: builtin_spec(m) for name, m in BUILTINS.items()}

__all__ = ["BUILTINS", "MODELS", "ModelSpec", "QuantumLayer", "build_model", "builtin_spec", "compiled_only",
           "input_view", "measured_circuit", "model_inputs", "model_spec", "quantum_layer", "register_circuit",
           "role_inputs", "shots_mode", "use_circuit_models"]


def register_circuit(name: str, ref: str) -> None:
    """Put circuit model `name` (its ref, from `circuit.plan`) into the registry of this process."""
    if name in BUILTINS:
        raise ValueError(f"models.{name}: {name!r} is a built-in model; give the circuit model another name")
    MODELS[name] = ModelSpec("qnn", circuit.equivalent_layers(ref), circuit.encoding(ref), ref)


def use_circuit_models(refs: dict[str, str]) -> None:
    """Make `refs` this process's circuit models: a grid loaded after another sees only its own."""
    for name in [n for n in MODELS if n not in BUILTINS and n not in refs]:
        del MODELS[name]
    for name, ref in refs.items():
        register_circuit(name, ref)


def compiled_only(name: str) -> bool:
    """Whether the compiled executor runs the model (a circuit model, or a built-in without a kernel): its
    models train one by one, not stacked, and finite-shot gradients cannot pass through a hybrid front end."""
    return model_spec(name).circuit is not None


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build_model(name: str, seed: int, image_side: int = 28) -> nn.Module:
    """A freshly initialised model; every initial weight flows from `seed`."""
    spec = model_spec(name)

    def quantum() -> nn.Module:  # the kernel where the model has one, else its compiled circuit
        if spec.circuit is None:
            return QuantumLayer(spec.n_layers, spec.encoding)
        from ..quantum.circuit_model import CircuitLayer

        return CircuitLayer(circuit.built(name, spec.circuit))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HQNN(quantum, image_side) if spec.family == "hqnn" else QNN(quantum)


def measured_circuit(name: str) -> Any:
    """The model's circuit as the qiskit backends run it (a `workloads.quantum.backends.Measured`)."""
    from ..quantum.backends import builtin_measured
    from ..quantum.circuit_model import measured

    spec = model_spec(name)  # a kernel's circuit is its member's (tests/test_builtin_models.py)
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
