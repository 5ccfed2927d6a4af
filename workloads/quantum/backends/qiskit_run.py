"""What every qiskit backend shares: transpilation, queries, the query hook and the cost of a query.

A query runs a `Measured` circuit: a built-in model's circuit (`builtin_measured`) or a circuit model's
own (`workloads.quantum.circuit_model.measured`), every qubit measured. Per (circuit, backend) it is
transpiled once per process with a seeded preset pass manager to the backend's ISA; per-sample parameter
rows are bound as one sampler PUB (isa, values[n, P]); the model's I/Z observables are estimated from the
measured bits (qubit j is bit j, Z_j = mean of 1 - 2*bit_j), and the classical head maps them to logits. What differs per backend (its qiskit object, sampler, repetition delay, calibration) is the
backend's own module in this package.

A *query hook* (`query_hook`) lets a caller intercept every backend query: the hardware ledger uses it to
capture the PUBs a stage needs (submit, without waiting) and to replay them from finished jobs (collect).
"""

from __future__ import annotations

import contextvars
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..circuits import N_QUBITS, model_circuit, tree_theta
from .credentials import BackendError, scrub

DEFAULT_OPTIMIZATION_LEVEL = 1
DEFAULT_SEED_TRANSPILER = 0
# QPU-time model for estimates: per-job overhead plus, per shot of every circuit, the repetition delay and
# the circuit's scheduled duration (IBM executes circuits column-wise over shots; usage is QPU-locked time).
JOB_OVERHEAD_S = 2.5
DEFAULT_REP_DELAY_S = 250e-6
DEFAULT_CIRCUIT_S = 20e-6
TWO_QUBIT = ("cx", "cz", "ecr", "rzz", "swap", "iswap", "rxx", "ryy", "rzx")
OPT_LEVEL_ENV = "QMU_HW_OPTIMIZATION_LEVEL"
_LOCK = threading.RLock()


def _kind(backend: str) -> Any:
    from . import kind  # the registry imports this module first

    return kind(backend)


_BACKENDS: dict[str, Any] = {}
_TRANSPILED: dict[tuple, "Transpiled"] = {}


def get_backend(backend: str) -> Any:
    """The qiskit BackendV2 behind a backend name (created once per process)."""
    with _LOCK:
        if backend not in _BACKENDS:
            _BACKENDS[backend] = _kind(backend).qiskit_backend(backend.partition(":")[2])
        return _BACKENDS[backend]


def optimization_level(level: int | None = None) -> int:
    if level is None:
        level = int(os.environ.get(OPT_LEVEL_ENV, DEFAULT_OPTIMIZATION_LEVEL))
    if level not in (0, 1, 2, 3):
        raise ValueError(f"optimization level must be 0, 1, 2 or 3, got {level!r}")
    return level


@dataclass(frozen=True)
class Transpiled:
    """An ISA circuit and its statistics."""

    isa: Any
    depth: int
    two_qubit_gates: int
    active_qubits: int
    duration_s: float | None
    optimization_level: int
    seed_transpiler: int


def _active_qubits(qc: Any) -> int:
    from qiskit.converters import circuit_to_dag

    dag = circuit_to_dag(qc)
    idle = set(dag.idle_wires())
    return sum(1 for q in dag.qubits if q not in idle)


@dataclass(frozen=True)
class Measured:
    """A circuit as the qiskit backends run it: every qubit measured into `meas`, its parameters bound from
    one row of [features | weights] per sample (`columns[i]` feeds `circuit.parameters[i]`), and the I/Z
    strings read from the measured bits. `key` names it in the per-process transpilation cache."""

    key: tuple
    circuit: Any  # QuantumCircuit
    columns: tuple[int, ...]
    observables: tuple[str, ...]
    amplitude: bool = False  # features are amplitudes: bound as the Mottonen tree's Gray-code angles

    def values(self, features: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per-sample parameter rows (n, P) in the circuit's parameter order."""
        feats = tree_theta(features) if self.amplitude else np.asarray(features, dtype=np.float64)
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64).reshape(1, -1), (len(feats), weights.size))
        return np.concatenate([feats.reshape(len(feats), -1), w], axis=1)[:, list(self.columns)]


def z_observables(n_qubits: int) -> tuple[str, ...]:
    """Z on every qubit, qubit j's first (Pauli strings in qiskit's order: the rightmost letter is qubit 0)."""
    return tuple("I" * (n_qubits - 1 - j) + "Z" + "I" * j for j in range(n_qubits))


@lru_cache(maxsize=16)
def builtin_measured(encoding: str, n_layers: int) -> Measured:
    """A built-in model's measured circuit: its parameters (features, then weights) sort in row order."""
    qc = model_circuit(encoding, n_layers, measure=True)
    return Measured(("builtin", encoding, n_layers), qc, tuple(range(qc.num_parameters)), z_observables(N_QUBITS),
                    encoding == "amplitude")


def transpiled(encoding: str, n_layers: int, backend: str, level: int | None = None,
               seed_transpiler: int = DEFAULT_SEED_TRANSPILER) -> Transpiled:
    """A built-in model's measured circuit transpiled to `backend`'s ISA; cached per process."""
    return transpile_measured(builtin_measured(encoding, n_layers), backend, level, seed_transpiler)


def transpile_measured(m: Measured, backend: str, level: int | None = None,
                       seed_transpiler: int = DEFAULT_SEED_TRANSPILER) -> Transpiled:
    """`m` transpiled to `backend`'s ISA; cached per process under its key."""
    level = optimization_level(level)
    key = (m.key, backend, level, seed_transpiler)
    with _LOCK:
        hit = _TRANSPILED.get(key)
    if hit is not None:
        return hit
    from qiskit.transpiler import generate_preset_pass_manager

    target_backend = get_backend(backend)
    pm = generate_preset_pass_manager(optimization_level=level, backend=target_backend, seed_transpiler=seed_transpiler)
    isa = pm.run(m.circuit)
    ops = isa.count_ops()
    duration = None
    try:
        if getattr(target_backend, "target", None) is not None and _kind(backend).DEVICE:
            duration = float(isa.estimate_duration(target_backend.target, unit="s"))
    except Exception:  # noqa: BLE001 -- durations are optional (simulators have none)
        duration = None
    out = Transpiled(isa, int(isa.depth()), int(sum(ops.get(g, 0) for g in TWO_QUBIT)), _active_qubits(isa),
                     duration, level, seed_transpiler)
    with _LOCK:
        _TRANSPILED[key] = out
    return out


def calibration_time(backend: str) -> str | None:
    """ISO timestamp of the backend's calibration (properties), or None when it has none."""
    if not _kind(backend).DEVICE:
        return None
    try:
        props = get_backend(backend).properties()
    except Exception:  # noqa: BLE001 -- some backends have no properties at all
        return None
    when = getattr(props, "last_update_date", None) if props is not None else None
    return when.isoformat() if hasattr(when, "isoformat") else (str(when) if when else None)


def device_info(backend: str) -> dict[str, Any]:
    """Provenance of the backend (its name and version, the runtime version, the calibration time)."""
    import qiskit
    import qiskit_ibm_runtime

    obj = get_backend(backend)
    return {
        "backend_name": str(getattr(obj, "name", backend)),
        "backend_version": str(getattr(obj, "backend_version", "") or ""),
        "calibration_time": calibration_time(backend),
        "qiskit_ibm_runtime_version": qiskit_ibm_runtime.__version__,
        "qiskit_version": qiskit.__version__,
    }


def rep_delay(backend: str) -> tuple[float, str | None]:
    """(repetition delay in seconds, why the default stood in for the device's, or None)."""
    if not _kind(backend).DEVICE:
        return DEFAULT_REP_DELAY_S, None  # a simulator has no delay: the model's default is the estimate
    try:
        value = getattr(get_backend(backend).configuration(), "default_rep_delay", None)
    except Exception as e:  # noqa: BLE001 -- recorded, never silent
        return DEFAULT_REP_DELAY_S, (f"{backend}: repetition delay unreadable ({scrub(f'{type(e).__name__}: {e}')}); "
                                     f"QPU estimate used {DEFAULT_REP_DELAY_S * 1e6:g} us")
    if not value:
        return DEFAULT_REP_DELAY_S, (f"{backend}: the backend reports no repetition delay; QPU estimate used "
                                     f"{DEFAULT_REP_DELAY_S * 1e6:g} us")
    return float(value), None


def rep_delay_s(backend: str) -> float:
    return rep_delay(backend)[0]


def qpu_seconds_estimate(backend: str, circuits: float, shots: int, jobs: float, t: Transpiled | None = None) -> float:
    """Estimated QPU-locked seconds: per job overhead + circuits * shots * (rep delay + circuit duration)."""
    per_shot = rep_delay_s(backend) + ((t.duration_s if t and t.duration_s else None) or DEFAULT_CIRCUIT_S)
    return jobs * JOB_OVERHEAD_S + circuits * shots * per_shot


# ----------------------------------------------------------------------------------------------------------
# queries, sampling and the hook


@dataclass
class Query:
    """One backend query of a stage: `values` rows bound into the circuit, each sampled with `shots`."""

    backend: str
    circuit: Measured
    shots: int
    seed: int
    values: np.ndarray


@dataclass
class QueryResult:
    z: np.ndarray  # (n, observables) estimated expectations, (n, 8) <Z_j> for the built-ins
    cost: dict[str, Any] = field(default_factory=dict)


Hook = Callable[[Query], "QueryResult | None"]
_HOOK: contextvars.ContextVar[Hook | None] = contextvars.ContextVar("qmu_backend_hook", default=None)


@contextmanager
def query_hook(fn: Hook) -> Iterator[None]:
    """Route every backend query made inside the block through `fn` (returning None runs it normally)."""
    token = _HOOK.set(fn)
    try:
        yield
    finally:
        _HOOK.reset(token)


def z_from_bits(packed: np.ndarray, num_bits: int, observables: tuple[str, ...] | None = None) -> np.ndarray:
    """Expectations of I/Z strings (default: Z on qubits 0..7) per row from packed measured bits (a
    BitArray's array, shape (n, shots, bytes)): the mean of the product of 1 - 2*bit over each Z."""
    from qiskit.primitives import BitArray

    bits = BitArray(np.asarray(packed, dtype=np.uint8), num_bits).to_bool_array(order="little")
    if observables is None:
        return 1.0 - 2.0 * bits[..., :N_QUBITS].mean(axis=-2)
    n = len(observables[0])
    masks = np.array([[label[n - 1 - q] == "Z" for q in range(n)] for label in observables])  # (obs, qubits)
    parity = (bits[..., :n].astype(np.int64) @ masks.T.astype(np.int64)) % 2  # (..., shots, obs)
    return 1.0 - 2.0 * parity.mean(axis=-2)


def pub_bits(pub_result: Any) -> tuple[np.ndarray, int]:
    """(packed array, num_bits) of the `meas` register of one PUB result."""
    from qiskit.primitives import BitArray

    data = getattr(pub_result, "data", None)
    ba = getattr(data, "meas", None) if data is not None else None
    if ba is None:  # an executor item result: {"meas": bool array (n, shots, bits), little-endian}
        raw = getattr(pub_result, "result", pub_result)
        bools = np.asarray(raw["meas"], dtype=bool)
        ba = BitArray.from_bool_array(bools.reshape(-1, *bools.shape[-2:]), order="little")
    return np.asarray(ba.array), int(ba.num_bits)


def make_sampler(backend: str, shots: int, seed: int | None, t: Transpiled, mode: Any = None) -> Any:
    """The sampler `backend`'s module builds (in `mode`, a service Batch, for hardware)."""
    return _kind(backend).sampler(backend, shots, None if seed is None else seed % 2**31, t, mode)


def job_usage(job: Any) -> tuple[float | None, str | None]:
    """(QPU seconds the service reports for a finished job, or None; why the read failed, or None).
    A service that reports no usage (local mode) is None without an error; a failed read is an error."""
    try:
        u = job.usage()
    except Exception as e:  # noqa: BLE001 -- recorded in the ledger and the row, never silent
        return None, f"usage of job {job.job_id()} unreadable: {scrub(f'{type(e).__name__}: {e}')}"
    return (float(u) if u else None), None


def run_query(q: Query, level: int | None = None) -> QueryResult:
    """Execute one query synchronously on its backend."""
    t = transpile_measured(q.circuit, q.backend, level)
    sampler = make_sampler(q.backend, q.shots, q.seed, t)
    try:
        job = sampler.run([(t.isa, q.values)], shots=q.shots)
        result = job.result()
    except Exception as e:  # noqa: BLE001 -- scrubbed and re-raised without the original chain
        raise BackendError(f"{q.backend}: job failed: {scrub(f'{type(e).__name__}: {e}')}") from None
    packed, nb = pub_bits(result[0])
    usage, error = job_usage(job) if _kind(q.backend).HARDWARE else (None, None)
    cost = query_cost(q, t, [str(job.job_id())], usage)
    errors = [e for e in (error, rep_delay(q.backend)[1]) if e]
    if errors:
        cost["qpu_seconds_error"] = "; ".join(errors)
    return QueryResult(z_from_bits(packed, nb, q.circuit.observables), cost)


def query_cost(q: Query, t: Transpiled, job_ids: list[str], usage: float | None, jobs: float = 1.0) -> dict[str, Any]:
    """The cost dict of one query (keys that `workloads.stages.evaluate_stage` copies into the row)."""
    n = len(q.values)
    info = device_info(q.backend)
    reported = {} if usage is None else {"qpu_seconds": float(usage)}  # unknown QPU time is absent, never 0
    return {
        "circuits": float(n), "shots": float(n * q.shots), **reported,
        "qpu_seconds_est": qpu_seconds_estimate(q.backend, n, q.shots, jobs, t),
        "transpiled_depth": t.depth, "two_qubit_gates": t.two_qubit_gates,
        "optimization_level": t.optimization_level,
        "calibration_time": info["calibration_time"],
        "job_ids": list(job_ids),
        "backend_version": info["backend_version"],
        "backend_name": info["backend_name"],
        "qiskit_ibm_runtime_version": info["qiskit_ibm_runtime_version"],
    }


def make_query(model: torch.nn.Module, x: torch.Tensor, shots: int, backend: str, seed: int) -> Query:
    """The per-sample parameter rows of `model`'s circuit on inputs x."""
    q = model.quantum
    with torch.no_grad():
        feats = torch.cat([model.encoded(x[i : i + 1000]) for i in range(0, len(x), 1000)]) if len(x) else x
    measured = layer_measured(q)
    values = measured.values(feats.detach().cpu().numpy().astype(np.float64), q.weight.detach().cpu().numpy())
    return Query(backend, measured, int(shots), int(seed), values)


def layer_measured(layer: torch.nn.Module) -> Measured:
    """The measured circuit of a model's quantum layer: a circuit model's layer carries its own."""
    own = getattr(layer, "measured", None)
    return own() if callable(own) else builtin_measured(layer.encoding, int(layer.weight.shape[0]))


def backend_logits(model: torch.nn.Module, x: torch.Tensor, shots: int | None, backend: str,
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """(logits, cost) of `model` on x with its quantum layer sampled on `backend` with `shots` per sample."""
    if shots is None:
        raise ValueError(f"backend {backend!r} measures shots; eval_shots 'exact' needs backend torch")
    _kind(backend)
    q = make_query(model, x, shots, backend, seed)
    hook = _HOOK.get()
    res = hook(q) if hook is not None else None
    if res is None:
        res = run_query(q)
    z = torch.as_tensor(np.asarray(res.z, dtype=np.float64))
    with torch.no_grad():
        logits = model.head(z.to(model.head.weight.dtype))
    return logits, dict(res.cost)
