"""The built-in models: one module each, registered below.

A member (its docstring says what the model is) is defined as a grid's circuit model is: `ENTRY` is the
`models:` entry a user would write for it (its circuit's builder `circuit`, its input and weight vectors, its
encoding), `FAMILY` names the classical front end (`qnn`: none, `hqnn`: the convolutional one).
`FAST_LAYERS` says whether the hand-written kernel (`workloads/quantum/statevector.py`, U3 and a CNOT ring on
8 qubits) runs it: its layer count, or None for a circuit that the compiled executor runs.
`tests/test_builtin_models.py` checks every member's circuit against qiskit's Statevector and, where it has
one, against its kernel. Adding a built-in model is one module plus one line here.
"""

from __future__ import annotations

from types import ModuleType

from ...registry import members
from . import hqnn_l1, qnn_angle_l2, qnn_l5, qnn_l10

REQUIRED = ("NAME", "FAMILY", "ENTRY", "FAST_LAYERS", "circuit")
FAMILIES = ("qnn", "hqnn")

BUILTINS: dict[str, ModuleType] = members(REQUIRED, qnn_l5, qnn_l10, hqnn_l1, qnn_angle_l2)
