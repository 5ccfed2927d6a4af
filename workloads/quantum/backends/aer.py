"""`aer`: qiskit-aer's ideal SamplerV2, seeded per query."""

from __future__ import annotations

from typing import Any

from .qiskit_run import backend_logits as logits  # noqa: F401 -- a registry member's evaluator

NAME = "aer"
LABEL = "qiskit-aer"
SUMMARY = "qiskit-aer's ideal sampler on the transpiled circuit; shots only"
NAMED = False
EXACT = False
QISKIT = True
DEVICE = False
HARDWARE = False


def validate(device: str) -> None:
    """Nothing to check: qiskit-aer is a dependency."""


def qiskit_backend(device: str) -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator()


def sampler(backend: str, shots: int, seed: int | None, t: Any, mode: Any = None) -> Any:
    from qiskit_aer.primitives import SamplerV2

    return SamplerV2(default_shots=shots, seed=seed, options={"backend_options": {}})


def simulation(backend: str, t: Any, shots: int) -> str:
    return "aer statevector"
