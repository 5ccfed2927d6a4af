"""The backends a model is evaluated on: one module each, registered below (docs/grid.md, backends).

A backend name is a member's NAME (`torch`, `aer`, `aer-noise`) or, for members whose NAMED is true,
`NAME:<device>` (`fake:FakeTorino`, `ibm:ibm_torino`). Each member declares what it is (EXACT, QISKIT,
DEVICE, HARDWARE), checks its device name (`validate`) and evaluates a model (`logits`); qiskit members
also build their qiskit backend and sampler. Adding a backend is one module plus one line here.
"""

from __future__ import annotations

import re
from types import ModuleType

from ...registry import members
from . import aer, aer_noise, fake, ibm, torch_statevector
from .credentials import (BackendError, CannotConnect, MissingCredentials, credentials_source, require_credentials,  # noqa: F401
                          runtime_service, scrub)
from .qiskit_run import (JOB_OVERHEAD_S, Measured, Query, QueryResult, Transpiled, backend_logits,  # noqa: F401
                         builtin_measured, device_info, get_backend, job_usage, layer_measured, make_query,
                         make_sampler, optimization_level, pub_bits, qpu_seconds_estimate, query_cost, query_hook,
                         rep_delay, rep_delay_s, run_query, transpile_measured, transpiled, z_from_bits,
                         calibration_time)

REQUIRED = ("NAME", "LABEL", "SUMMARY", "NAMED", "EXACT", "QISKIT", "DEVICE", "HARDWARE", "validate", "logits")
QISKIT_REQUIRED = ("qiskit_backend", "sampler", "simulation")
_DEVICE = re.compile(r"^[A-Za-z0-9_\-]+$")

BACKENDS: dict[str, ModuleType] = members(REQUIRED, torch_statevector, aer, aer_noise, fake, ibm)
for _m in BACKENDS.values():
    if _m.QISKIT:
        members(QISKIT_REQUIRED, _m)


def choices() -> str:
    """The accepted spellings, for error messages: 'torch, aer, aer-noise, fake:<device> or ibm:<device>'."""
    names = [f"{m.NAME}:<device>" if m.NAMED else m.NAME for m in BACKENDS.values()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def kind(backend: str) -> ModuleType:
    """The member that runs `backend`; ValueError naming the choices when there is none."""
    name, sep, device = str(backend).partition(":")
    m = BACKENDS.get(name)
    if m is None or bool(sep) != m.NAMED or (m.NAMED and not _DEVICE.match(device)):
        raise ValueError(f"unknown backend {backend!r}; choose {choices()}")
    return m


def validate_backend(backend: str) -> str:
    """`backend` when a member runs it and its device name checks out, else ValueError."""
    kind(backend).validate(str(backend).partition(":")[2])
    return backend


def is_local(backend: str) -> bool:
    """Whether jobs on `backend` run in this process (every backend that spends no QPU time)."""
    return not kind(backend).HARDWARE
