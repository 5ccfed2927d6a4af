"""`fake:<Name>`: a qiskit-ibm-runtime fake device (its coupling map, basis and noise model), run locally.

The rehearsal of a hardware grid: the same transpilation, ledger and budget as `ibm:`, no network. The
noisy distribution is exact: Aer's density matrix where 4^active qubits is cheap, else branching
trajectories shared across shots (`workloads.quantum.trajectories`).
"""

from __future__ import annotations

import threading
from typing import Any

from .qiskit_run import backend_logits as logits  # noqa: F401 -- a registry member's evaluator
from .qiskit_run import get_backend

NAME = "fake"
LABEL = "fake IBM device"
SUMMARY = "a qiskit-ibm-runtime fake backend with its noise model, simulated exactly on this machine"
NAMED = True  # fake:<Name>, e.g. fake:FakeTorino
EXACT = False
QISKIT = True
DEVICE = True  # calibration, repetition delay and scheduled durations come from the fake device
HARDWARE = False
_SIMULATORS: dict[str, Any] = {}
_LOCK = threading.Lock()


def validate(device: str) -> None:
    from qiskit_ibm_runtime import fake_provider

    if not hasattr(fake_provider, device):
        raise ValueError(f"unknown fake backend {device!r}; try e.g. fake:FakeTorino or fake:FakeFez")


def qiskit_backend(device: str) -> Any:
    from qiskit_ibm_runtime import fake_provider

    validate(device)
    return getattr(fake_provider, device)()


def density_matrix(backend: str) -> Any:
    """An AerSimulator carrying the device's noise model, built once per process (rebuilding the noise
    model per job costs more than simulating a small job)."""
    with _LOCK:
        if backend not in _SIMULATORS:
            from qiskit_aer import AerSimulator

            _SIMULATORS[backend] = AerSimulator.from_backend(get_backend(backend), method="density_matrix")
        return _SIMULATORS[backend]


def simulation(backend: str, t: Any, shots: int) -> str:
    """Density matrix (cost 4^n per circuit) when it beats trajectories, else exact branching trajectories."""
    return "density_matrix" if 2 ** t.active_qubits <= max(shots, 256) else "trajectories"


def sampler(backend: str, shots: int, seed: int | None, t: Any, mode: Any = None) -> Any:
    from ..trajectories import NoisySampler

    return NoisySampler(density_matrix(backend), shots, seed)
