"""Names the grid may use: datasets, models, methods and backends."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .data import DATASETS


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "qnn" (encoded features -> circuit -> Linear) or "hqnn" (CNN front end)
    n_layers: int
    encoding: str  # "amplitude" | "angle"


MODELS: dict[str, ModelSpec] = {
    "qnn-l5": ModelSpec("qnn", 5, "amplitude"),
    "qnn-l10": ModelSpec("qnn", 10, "amplitude"),
    "hqnn-l1": ModelSpec("hqnn", 1, "amplitude"),
    "qnn-angle-l2": ModelSpec("qnn", 2, "angle"),
}
SIMULATORS = ("torch", "aer", "aer-noise")
_REMOTE = re.compile(r"^(fake|ibm):([A-Za-z0-9_\-]+)$")

__all__ = ["DATASETS", "MODELS", "METHODS", "SIMULATORS", "ModelSpec", "model_spec", "validate_backend"]


def __getattr__(name: str):
    """METHODS: the method names of `workloads.unlearning.METHODS`, the one method table (imported
    lazily because the methods import the models, which import this module)."""
    if name == "METHODS":
        from .unlearning import METHODS

        return tuple(METHODS)
    raise AttributeError(name)


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def validate_backend(name: str) -> str:
    """Accept torch, aer, aer-noise, fake:<FakeBackend> (must exist locally) or ibm:<name>."""
    if name in SIMULATORS:
        return name
    m = _REMOTE.match(str(name))
    if not m:
        raise ValueError(
            f"unknown backend {name!r}; choose torch, aer, aer-noise, fake:<FakeBackend> or ibm:<backend>"
        )
    if m.group(1) == "fake":
        from qiskit_ibm_runtime import fake_provider

        if not hasattr(fake_provider, m.group(2)):
            raise ValueError(f"unknown fake backend {m.group(2)!r}; try e.g. fake:FakeTorino or fake:FakeFez")
    return name
