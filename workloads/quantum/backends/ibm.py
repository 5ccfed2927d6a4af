"""`ibm:<name>`: a real IBM Quantum device through qiskit-ibm-runtime. Spends QPU time: every job goes
through the QPU budget and the ledger (`qmu hw submit`, or `qmu run --max-qpu-seconds`)."""

from __future__ import annotations

from typing import Any

from .credentials import BackendError, credentials_source, runtime_service, scrub
from .qiskit_run import backend_logits as logits  # noqa: F401 -- a registry member's evaluator
from .qiskit_run import get_backend

NAME = "ibm"
LABEL = "IBM Quantum"
SUMMARY = "an IBM Quantum device through qiskit-ibm-runtime; needs credentials, a QPU budget and the ledger"
NAMED = True  # ibm:<device>, e.g. ibm:ibm_torino
EXACT = False
QISKIT = True
DEVICE = True
HARDWARE = True  # jobs run on the service, not in this process, and spend QPU budget


def validate(device: str) -> None:
    """Device names are checked by the service when a job is submitted (no network before)."""


def qiskit_backend(device: str) -> Any:
    try:
        return runtime_service().backend(device)
    except BackendError:  # no credentials, or no service: already a clear, scrubbed message
        raise
    except Exception as e:  # noqa: BLE001 -- re-raised without the chained original (it may hold the token)
        raise BackendError(f"IBM backend {device!r} unavailable: {scrub(f'{type(e).__name__}: {e}')}") from None


def simulation(backend: str, t: Any, shots: int) -> str:
    return "hardware"


def sampler(backend: str, shots: int, seed: int | None, t: Any, mode: Any = None) -> Any:
    """The client-side executor sampler (qiskit-ibm-runtime's recommended one), in `mode` (a Batch) when given."""
    from qiskit_ibm_runtime.executor_sampler import Sampler

    out = Sampler(mode=mode if mode is not None else get_backend(backend))
    out.options.default_shots = shots
    return out


def stand_in(backend: str) -> str:
    """The backend to transpile against for an estimate: without credentials, the fake backend of the same
    device when qiskit-ibm-runtime ships one."""
    from .credentials import MissingCredentials

    if credentials_source() is not None:
        return backend
    from qiskit_ibm_runtime import fake_provider

    name = backend.split(":", 1)[1].removeprefix("ibm_")
    fake = "Fake" + name[:1].upper() + name[1:]
    if hasattr(fake_provider, fake):
        return f"fake:{fake}"
    raise MissingCredentials(f"estimating {backend!r} needs its target: set QISKIT_IBM_TOKEN or save an account "
                             f"(no local fake backend {fake!r} to stand in)")
