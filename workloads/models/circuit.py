"""Circuit models in the model registry: a grid's `models:` entries, planned once and rebuilt in any process.

At grid load (the plan step) each entry is built and checked against qiskit's Statevector
(`workloads.quantum.circuit_model.build`) and becomes a *ref*: canonical JSON of the entry as the grid gives
it, its identity (the circuit's hash and the keys that shape the model), the circuit's provenance and its
weight count. The ref travels in every stage config, so it is part of cell ids and stage keys (a changed
circuit is a new model, a moved builder is not), and whichever process runs a stage registers the model
from it (`workloads.models.register_circuit`). The first build in a process rebuilds the circuit from the
entry and refuses one whose hash differs from the planned one: a worker that imports another version of
the builder.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..quantum.circuit_model import CircuitModel, build, measured
from ..quantum.compiled import CircuitError

N_FEATURES = 8  # the data's angle view (PCA to 8 dims), which angle and custom encodings feed to the inputs
WEIGHTS_PER_LAYER = 24  # a built-in ansatz layer's weights: the cost models scale with layers
_BUILT: dict[tuple[str, str], CircuitModel] = {}


def plan(name: str, entry: Any, backends: tuple[str, ...] | list[str]) -> str:
    """The ref of one `models:` entry, checked for every backend of the grid; a CircuitError names
    `models.<name>.<key>`."""
    from ..quantum import backends as wb

    limits = [(q, b) for b in backends if (q := backend_qubits(b)) is not None]
    max_qubits, backend = min(limits) if limits else (None, "torch")
    encoding = entry.get("encoding", "angle") if isinstance(entry, dict) else None
    model = build(name, entry, max_qubits, backend, None if encoding == "amplitude" else N_FEATURES)
    if any(wb.kind(b).QISKIT for b in backends):
        measured(model)  # refuses observables that the qiskit backends cannot read from one measurement
    spec = model.spec
    identity = {"hash": model.provenance["circuit_hash"], "inputs": spec.inputs, "weights": spec.weights,
                "encoding": spec.encoding, "observables": list(spec.observables or ["Z"]), "head": spec.head}
    ref = json.dumps({"entry": entry, "identity": identity, "provenance": model.provenance,
                      "n_weights": model.compiled.n_weights}, sort_keys=True, separators=(",", ":"))
    _BUILT[(name, ref)] = model
    return ref


def backend_qubits(backend: str) -> int | None:
    """Qubits of a device backend (a fake one, or `ibm:` through its local fake stand-in); None for the
    simulators, and for a device only the service knows (checked when its jobs are submitted)."""
    from ..quantum import backends as wb

    kind = wb.kind(backend)
    if not kind.DEVICE:
        return None
    target = backend
    if kind.HARDWARE:
        try:
            target = kind.stand_in(backend)
        except wb.BackendError:  # no credentials and no fake twin: nothing local to read
            return None
        if wb.kind(target).HARDWARE:
            return None
    return int(wb.get_backend(target).num_qubits)


def identity(ref: str) -> dict[str, Any]:
    """What a stage spec records of a circuit model: the circuit's hash and the keys that shape the model."""
    return json.loads(ref)["identity"]


def provenance(ref: str) -> dict[str, Any]:
    """Row columns: circuit_hash, circuit_qubits, circuit_parameters, circuit_depth, circuit_two_qubit_gates."""
    return dict(json.loads(ref)["provenance"])


def encoding(ref: str) -> str:
    """The data view the model reads: amplitudes, or the 8 angle features (angle and custom encodings)."""
    return "amplitude" if identity(ref)["encoding"] == "amplitude" else "angle"


def equivalent_layers(ref: str) -> int:
    """Built-in ansatz layers with as many weights, for the cost models that scale with layers."""
    return max(1, math.ceil(json.loads(ref)["n_weights"] / WEIGHTS_PER_LAYER))


def built(name: str, ref: str) -> CircuitModel:
    """The circuit model of a ref, built once per process and checked against the planned circuit."""
    hit = _BUILT.get((name, ref))
    if hit is not None:
        return hit
    model = build(name, json.loads(ref)["entry"])
    planned = identity(ref)["hash"]
    if model.provenance["circuit_hash"] != planned:
        raise CircuitError(f"models.{name}.circuit: this process builds circuit {model.provenance['circuit_hash']}, "
                           f"the grid was planned with {planned}; give every worker the same version of the "
                           "builder (docs/models.md, circuit models on a cluster)")
    _BUILT[(name, ref)] = model
    return model
