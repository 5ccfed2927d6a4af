"""`aer-noise`: qiskit-aer with a fixed depolarizing and readout noise model, the same on every machine."""

from __future__ import annotations

from typing import Any

from .qiskit_run import backend_logits as logits  # noqa: F401 -- a registry member's evaluator

NAME = "aer-noise"
LABEL = "qiskit-aer, depolarizing noise"
SUMMARY = "qiskit-aer with depolarizing p1=5e-4, p2=5e-3 and readout bit-flip 1e-2; shots only"
NAMED = False
EXACT = False
QISKIT = True
DEVICE = False
HARDWARE = False
NOISE = {"p1": 5e-4, "p2": 5e-3, "readout": 1e-2}


def validate(device: str) -> None:
    """Nothing to check: the noise model is fixed."""


def noise_model() -> Any:
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    nm = NoiseModel(basis_gates=["u", "cx", "ry", "rz", "sx", "x"])
    nm.add_all_qubit_quantum_error(depolarizing_error(NOISE["p1"], 1), ["u", "ry", "rz", "sx", "x"])
    nm.add_all_qubit_quantum_error(depolarizing_error(NOISE["p2"], 2), ["cx"])
    p = NOISE["readout"]
    nm.add_all_qubit_readout_error(ReadoutError([[1 - p, p], [p, 1 - p]]))
    return nm


def qiskit_backend(device: str) -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator(noise_model=noise_model())


def sampler(backend: str, shots: int, seed: int | None, t: Any, mode: Any = None) -> Any:
    from qiskit_aer.primitives import SamplerV2

    return SamplerV2(default_shots=shots, seed=seed, options={"backend_options": {"noise_model": noise_model()}})


def simulation(backend: str, t: Any, shots: int) -> str:
    return "aer statevector"  # noise is sampled per shot
