"""Circuit models: a user's parametrised qiskit circuit named by a model entry, loaded, compiled and checked.

An entry is a mapping such as
    {circuit: "my_pkg.ansatz:build", inputs: x, weights: w, encoding: angle, observables: Z, head: linear}
where `circuit` is an importable `module:function` returning a `QuantumCircuit`, or a .qpy or OpenQASM 3
(.qasm) file. Every mistake is one `CircuitError` whose message starts with `models.<name>.<key>:`.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from qiskit import QuantumCircuit, qasm3, qpy
from qiskit.circuit import ParameterVector
from torch import nn

from .compiled import CircuitError, CompiledCircuit, check_against_statevector, compile_circuit
from .parameter_shift import ExecutionLog

ENCODINGS = ("angle", "amplitude", "custom")
HEADS = ("linear",)
KEYS = ("circuit", "inputs", "weights", "encoding", "observables", "head")
AMPLITUDE_FEATURES = 256  # the data's amplitude view: 2^8 amplitudes


@dataclass(frozen=True)
class CircuitModelSpec:
    name: str
    circuit: str  # "module:function", or a path ending in .qpy or .qasm
    inputs: str | None = "x"  # None with amplitude encoding: the Mottonen tree prepares the state
    weights: str = "w"
    encoding: str = "angle"  # angle: PCA features scaled to angles; amplitude; custom: PCA features as they are
    observables: tuple[str, ...] | None = None  # None: Z on every qubit
    head: str = "linear"


@dataclass(frozen=True)
class CircuitModel:
    spec: CircuitModelSpec
    circuit: QuantumCircuit
    compiled: CompiledCircuit
    provenance: dict[str, Any]


def parse_entry(name: str, entry: Any) -> CircuitModelSpec:
    """A `models:` entry -> its spec, with every key and value checked."""
    where = f"models.{name}"
    if not isinstance(entry, dict):
        raise CircuitError(f"{where}: expected a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise CircuitError(f"{where}.{unknown[0]}: unknown key; choose from {', '.join(KEYS)}")
    if not isinstance(entry.get("circuit"), str) or not entry["circuit"]:
        raise CircuitError(f"{where}.circuit: name a builder 'module:function' or a .qpy/.qasm file")
    encoding = entry.get("encoding", "angle")
    if encoding not in ENCODINGS:
        raise CircuitError(f"{where}.encoding: {encoding!r} is not one of {', '.join(ENCODINGS)}")
    head = entry.get("head", "linear")
    if head not in HEADS:
        raise CircuitError(f"{where}.head: {head!r} is not one of {', '.join(HEADS)}")
    obs = entry.get("observables", "Z")
    if obs == "Z":
        observables = None
    elif isinstance(obs, list) and obs and all(isinstance(o, str) for o in obs):
        observables = tuple(obs)
    else:
        raise CircuitError(f"{where}.observables: give Z (every qubit) or a list of Pauli strings such as [ZZII]")
    inputs = entry.get("inputs", None if encoding == "amplitude" else "x")
    return CircuitModelSpec(name, entry["circuit"], inputs, str(entry.get("weights", "w")), encoding, observables,
                            head)


def load_circuit(spec: CircuitModelSpec) -> QuantumCircuit:
    """The circuit the spec names, from its builder or its file."""
    where = f"models.{spec.name}.circuit"
    if spec.circuit.endswith((".qpy", ".qasm")):
        return _from_file(Path(spec.circuit), spec, where)
    module, _, func = spec.circuit.partition(":")
    if not func:
        raise CircuitError(f"{where}: {spec.circuit!r} is neither 'module:function' nor a .qpy/.qasm file")
    if str(Path.cwd()) not in sys.path:  # builders next to the grid, as with `python -m`
        sys.path.insert(0, str(Path.cwd()))
    try:
        builder = getattr(importlib.import_module(module), func)
    except ImportError as e:
        raise CircuitError(f"{where}: cannot import module {module!r} ({e})") from None
    except AttributeError:
        raise CircuitError(f"{where}: module {module!r} has no function {func!r}") from None
    try:
        circuit = builder()
    except Exception as e:  # the user's code: report it on one line, whatever it raised
        raise CircuitError(f"{where}: {spec.circuit} raised {type(e).__name__}: {e}") from None
    if not isinstance(circuit, QuantumCircuit):
        raise CircuitError(f"{where}: {spec.circuit} returned {type(circuit).__name__}, not a QuantumCircuit")
    return circuit


def _from_file(path: Path, spec: CircuitModelSpec, where: str) -> QuantumCircuit:
    if not path.is_file():
        raise CircuitError(f"{where}: file {path} not found")
    try:
        if path.suffix == ".qpy":
            with path.open("rb") as f:
                circuit = qpy.load(f)[0]
        else:
            circuit = qasm3.loads(path.read_text())
    except Exception as e:  # a parser's own message says what is wrong in the file
        raise CircuitError(f"{where}: cannot read {path}: {e}") from None
    return _revector(circuit, [n for n in (spec.inputs, spec.weights) if n])


def _revector(circuit: QuantumCircuit, names: list[str]) -> QuantumCircuit:
    """OpenQASM 3 has no parameter vectors: turn inputs named `x[3]`, `x_3` or `_x_3_` back into x[3]."""
    found: dict[str, dict[int, Any]] = {n: {} for n in names}
    for p in circuit.parameters:
        if getattr(p, "vector", None) is not None:
            continue
        for n in names:
            m = re.fullmatch(rf"_?{re.escape(n)}(?:\[(\d+)\]|_(\d+)_?)", p.name)
            if m:
                found[n][int(m.group(1) or m.group(2))] = p
    mapping = {}
    for n, elems in found.items():
        if elems:
            vec = ParameterVector(n, max(elems) + 1)
            mapping.update({p: vec[i] for i, p in elems.items()})
    return circuit.assign_parameters(mapping) if mapping else circuit


def provenance(circuit: QuantumCircuit) -> dict[str, Any]:
    """Hash, qubits, parameters, depth and two-qubit gates of a circuit.

    The hash is of its OpenQASM 3 text: QPY bytes carry each parameter's random UUID, so two builds of
    the same circuit would hash differently."""
    text = qasm3.dumps(circuit)
    two = sum(1 for inst in circuit.data if len(inst.qubits) == 2 and inst.operation.name != "barrier")
    return {"circuit_hash": hashlib.sha256(text.encode()).hexdigest()[:16], "circuit_qubits": circuit.num_qubits,
            "circuit_parameters": circuit.num_parameters, "circuit_depth": circuit.depth(),
            "circuit_two_qubit_gates": two}


def build(name: str, entry: Any, max_qubits: int | None = None, backend: str = "torch",
          n_features: int | None = None) -> CircuitModel:
    """Parse, load, compile and check one entry against qiskit's Statevector (the plan-time check).

    `max_qubits`: the backend's qubits; `n_features`: the width of the data's angle view, which angle
    and custom encodings feed to the circuit's input vector."""
    spec = parse_entry(name, entry)
    circuit = load_circuit(spec)
    where = f"models.{name}"
    if max_qubits is not None and circuit.num_qubits > max_qubits:
        raise CircuitError(f"{where}.circuit: {circuit.num_qubits} qubits, more than the {max_qubits} of "
                           f"backend {backend}")
    if spec.encoding == "amplitude":
        if 2**circuit.num_qubits != AMPLITUDE_FEATURES:
            raise CircuitError(f"{where}.encoding: amplitude encoding needs {AMPLITUDE_FEATURES.bit_length() - 1} "
                               f"qubits for {AMPLITUDE_FEATURES} amplitudes; the circuit has {circuit.num_qubits}")
        if spec.inputs is not None:
            raise CircuitError(f"{where}.inputs: amplitude encoding prepares the state itself; drop inputs "
                               "or use encoding: custom")
    elif spec.inputs is None:
        raise CircuitError(f"{where}.inputs: {spec.encoding} encoding needs the circuit's input vector")
    try:
        compiled = compile_circuit(circuit, spec.inputs, spec.weights, spec.observables)
        check_against_statevector(circuit, spec.inputs, spec.weights, compiled=compiled)
        if n_features is not None and spec.inputs is not None and compiled.n_inputs != n_features:
            raise CircuitError(f"inputs: the data gives {n_features} features; the circuit's input vector "
                               f"{spec.inputs} has {compiled.n_inputs}")
    except CircuitError as e:
        key = "observables" if str(e).startswith("observable") else (
            "inputs" if str(e).startswith("inputs") else "weights" if str(e).startswith("weights") else "circuit")
        raise CircuitError(f"{where}.{key}: {e}") from None
    return CircuitModel(spec, circuit, compiled, provenance(circuit))


_MEASURED: dict[tuple, Any] = {}


def measured(model: CircuitModel) -> Any:
    """The circuit as the qiskit backends run it (a `backends.Measured`): for amplitude encoding the
    built-in Mottonen tree first, then the user's circuit as given, every qubit measured. Cached per process."""
    from .backends.qiskit_run import Measured
    from .circuits import amplitude_tree

    cc = model.compiled
    key = ("circuit", model.provenance["circuit_hash"], model.spec.encoding, model.spec.inputs, model.spec.weights,
           cc.observables)
    if key in _MEASURED:
        return _MEASURED[key]
    bad = [o for o in cc.observables if set(o) - {"I", "Z"}]
    if bad:
        raise CircuitError(f"models.{model.spec.name}.observables: {bad[0]!r} needs a basis change that the qiskit "
                           "backends do not add; use I/Z strings there, or backend torch")
    amplitude = model.spec.encoding == "amplitude"
    if amplitude:
        tree = amplitude_tree("_amplitude_tree")
        qc, n_features, inputs = tree.compose(model.circuit), tree.num_parameters, "_amplitude_tree"
    else:
        qc, n_features, inputs = model.circuit.copy(), cc.n_inputs, cc.input_name
    qc.measure_all()
    columns = []
    for p in qc.parameters:
        vec = p.vector.name
        columns.append(p.index if vec == inputs else n_features + p.index)
    out = Measured(key, qc, tuple(columns), tuple(cc.observables), amplitude)
    _MEASURED[key] = out
    return out


class CircuitLayer(nn.Module):
    """A circuit model's quantum layer: inputs (angles, or amplitudes for amplitude encoding) -> <P> of
    its observables, exact with autograd gradients, or at `shots` with parameter-shift gradients.

    It keeps the built-in layer's interface (`shots`, `generator`, `log`), so `shots_mode` and the
    execution log work unchanged. At finite shots, gradients with respect to amplitude inputs (through
    the Mottonen tree) are not implemented and raise."""

    def __init__(self, model: CircuitModel):
        super().__init__()
        self.model = model
        self.encoding = model.spec.encoding
        self.circuit = model.compiled
        self.weight = nn.Parameter(torch.rand(self.circuit.n_weights, dtype=torch.float64) * 2 * math.pi)
        self.shots: int | None = None
        self.generator: torch.Generator | None = None
        self.log = ExecutionLog()

    @property
    def n_outputs(self) -> int:
        return len(self.circuit.observables)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amplitude = self.encoding == "amplitude"
        inputs, state = (None, x) if amplitude else (x, None)
        rows = x.shape[0] * self.circuit.settings()
        self.log.add(rows, self.shots)
        if self.shots is not None and amplitude and x.requires_grad and torch.is_grad_enabled():
            raise CircuitError("finite-shot gradients through amplitude encoding are not supported for circuit models")
        z = self.circuit.expectations(inputs, self.weight, state, self.shots, self.generator)
        if z.requires_grad:
            n = self.circuit.device_circuits(x.shape[0], self.weight.requires_grad, x.requires_grad and not amplitude)
            extra = n - rows
            if amplitude and x.requires_grad:  # the Mottonen tree's 255 RY angles, two terms each
                extra += rows * 2 * (AMPLITUDE_FEATURES - 1)
            log, shots = self.log, self.shots
            # Exact: autograd stands in for the shift circuits a device would run; at shots they ran.
            hook = (lambda g: (log.add_device_only(extra), g)[1]) if shots is None else \
                (lambda g: (log.add(extra, shots), g)[1])
            z.register_hook(hook)
        return z

    def measured(self) -> Any:
        """What the qiskit backends run for this layer (`workloads.quantum.backends.layer_measured`)."""
        return measured(self.model)
