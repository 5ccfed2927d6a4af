"""Grid YAML (docs/grid.md) -> a validated, typed `GridSpec` that expands into cells.

Everything is checked here, before any Ray or store work: unknown keys, wrong types, empty or duplicated
axes, unknown model/method/backend/dataset names, bad forget specs and bad `params` overrides. Circuit models
(the `models:` section) are built and checked against qiskit's Statevector here too (the plan step). Every
error is a `GridError` whose message names the file, the key and the problem (the CLI turns it into exit 2).
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

Shots = Union[Literal["exact"], StrictInt]
AXES = ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots", "seed", "backend")
SHOT_AXES = ("train_shots", "unlearn_shots", "eval_shots")
_NAME = re.compile(r"^[a-z0-9_-]+$")


class GridError(ValueError):
    """A grid file that cannot run; str() is 'FILE: KEY: PROBLEM'."""

    def __init__(self, path: str | Path, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


class _Axes(BaseModel):
    """The `grid:` mapping; strict so that YAML `yes` or "3" never sneak in as ints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: list[StrictStr] = Field(min_length=1)
    forget: list[StrictStr] = Field(min_length=1)
    method: list[StrictStr] = Field(min_length=1)
    train_shots: list[Shots] = Field(default=["exact"], min_length=1)
    unlearn_shots: list[Shots] = Field(default=["exact"], min_length=1)
    eval_shots: list[Shots] = Field(default=["exact"], min_length=1)
    seed: list[StrictInt] = Field(default=[0], min_length=1)
    backend: list[StrictStr] | None = Field(default=None, min_length=1)


class _Verdicts(BaseModel):
    """The `verdicts:` mapping: the report's equivalence margins against `retrain`, fixed with the grid, before
    any data is read. Unset keys keep the report's defaults (docs/results.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auc_margin: StrictFloat | StrictInt | None = None
    tpr_margin: StrictFloat | StrictInt | None = None


MARGIN_MAX = 0.5  # a larger |Δ| allowed between two AUCs or two TPRs would call any two models equivalent


class _GridFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    dataset: StrictStr = "mnist"
    n_train: StrictInt = 1000
    n_test: StrictInt = 500
    n_eval: StrictInt | None = None
    backend: StrictStr | None = None
    models: dict[StrictStr, Any] = Field(default_factory=dict)  # circuit models (docs/models.md), checked by workloads
    grid: _Axes
    params: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict)
    verdicts: _Verdicts = Field(default_factory=_Verdicts)


@dataclass(frozen=True)
class GridSpec:
    """A validated grid: scalar settings plus the ordered axis values (`None` means exact shots)."""

    name: str
    path: str
    dataset: str
    n_train: int
    n_test: int
    axes: dict[str, tuple[Any, ...]]
    params: dict[str, dict[str, Any]]
    n_eval: int | None = None  # evaluate at most this many samples per split (hardware studies)
    # hash of the grid file, the workload module and the science code (set by the CLI); the manifest keeps it,
    # so a re-run of a finished grid is recognised without importing the workload
    fingerprint: str | None = None
    # the report's equivalence margins the grid sets (auc_margin, tpr_margin); the run's manifest records them
    verdicts: dict[str, float] = field(default_factory=dict)
    # the circuit models the grid defines: name -> ref (workloads/models/circuit.py), which travels in each cell
    circuits: dict[str, str] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n

    def combinations(self) -> list[dict[str, Any]]:
        """Every cell's axis values, in axis order (the last axis varies fastest)."""
        return [dict(zip(AXES, combo)) for combo in itertools.product(*(self.axes[a] for a in AXES))]

    def cells(self, cell_config: type | None = None) -> list[Any]:
        """Expand into `CellConfig`s of the workload (default `workloads.stages.CellConfig`)."""
        if cell_config is None:
            from workloads.stages import CellConfig as cell_config  # lazy: the harness owns no science
        out = []
        for c in self.combinations():
            cfg = cell_config(
                model=c["model"], forget=c["forget"], method=c["method"],
                train_shots=c["train_shots"], unlearn_shots=c["unlearn_shots"], eval_shots=c["eval_shots"],
                seed=c["seed"], backend=c["backend"], dataset=self.dataset,
                n_train=self.n_train, n_test=self.n_test,
                **({"n_eval": self.n_eval} if self.n_eval is not None else {}),
                **({"circuit": self.circuits[c["model"]]} if c["model"] in self.circuits else {}),
            )
            out.append(cfg.with_params(self.params) if self.params else cfg)
        return out


_BRANCH_TAGS = ("int", "str", "float")  # pydantic names Union branches in error locations; they are not keys


def _loc(loc: tuple[Any, ...]) -> str:
    """pydantic location -> 'grid.eval_shots[2]'."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in _BRANCH_TAGS or "[" in str(part):
            continue
        else:
            key += ("." if key else "") + str(part)
    return key or "(top level)"


def _first_error(path: Path, err: ValidationError) -> GridError:
    """One readable error: the first problem pydantic found, with its key. A misspelt key shows up as an unknown
    key and a missing one: the unknown key is named, with the missing key it may stand for."""
    errors = err.errors()
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    key = _loc(e["loc"])
    field = next((p for p in e["loc"] if isinstance(p, str) and p in SHOT_AXES), None)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        missing = [str(x["loc"][-1]) for x in errors if x["type"] == "missing"]
        known = list({"grid": _Axes, "verdicts": _Verdicts}.get(str(e["loc"][0]), _GridFile).model_fields)
        close = (difflib.get_close_matches(str(e["loc"][-1]), missing, n=1)
                 or difflib.get_close_matches(str(e["loc"][-1]), known, n=1))
        msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif e["type"] == "model_type":
        msg = f"expected a mapping of keys, got {e['input']!r}"
    elif e["type"] == "too_short":
        msg = "axis is empty; give at least one value"
    elif field and e["type"] in ("literal_error", "int_type"):
        msg = f"expected 'exact' or a positive integer, got {e['input']!r}"
    elif e["type"] != "value_error":
        msg = f"{msg}, got {e['input']!r}"
    return GridError(path, key, msg)


def _nearby_grids(path: Path) -> str:
    """', e.g. grids/a.yaml, grids/b.yaml' from the folder the user named (or the one above a missing file)."""
    folder = path if path.is_dir() else path.parent
    found = sorted(folder.glob("*.yaml"))[:6] if folder.is_dir() else []
    return (", e.g. " + ", ".join(str(f) for f in found)) if found else ""


def load_grid(path: str | Path, impl: str = "workloads.stages") -> GridSpec:
    """Read and fully validate a grid file for workload module `impl`; raises GridError on the first problem.

    Names (models, methods, backends, forget specs) are checked against the registries of `workloads`; `params` and
    the per-cell rules go through the workload module (its `resolve_params` and `CellConfig.validate`).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except OSError as e:
        raise GridError(path, "grid file", f"cannot read it ({e.strerror or e}); give the path of a grid YAML "
                        f"file{_nearby_grids(path)}") from None
    except UnicodeDecodeError:
        raise GridError(path, "grid file", "not a text file (expected UTF-8 YAML)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise GridError(path, "grid file", f"not valid YAML: {_yaml_problem(e)}") from None
    if raw is None:
        raise GridError(path, "grid file", "the file is empty; a grid file needs name, dataset and grid "
                        "(see grids/smoke.yaml and docs/grid.md)")
    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else f"a single value ({raw!r})"
        raise GridError(path, "(top level)", f"expected a mapping of keys (name: ..., grid: ...), got {kind}")
    try:
        f = _GridFile.model_validate(raw)
    except ValidationError as e:
        raise _first_error(path, e) from None
    return _check_semantics(path, f, importlib.import_module(impl))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: where, what, and while doing what."""
    mark, problem, context = (getattr(e, k, None) for k in ("problem_mark", "problem", "context"))
    if not problem:
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _check_semantics(path: Path, f: _GridFile, mod: Any) -> GridSpec:
    """Names and values that need the workload's registries."""
    from workloads.data.forget_set import parse_forget
    from workloads.data import DATASETS
    from workloads.models import MODELS
    from workloads.quantum.backends import validate_backend
    from workloads.unlearning import METHODS

    resolve_params = getattr(mod, "resolve_params", None)
    if resolve_params is None:
        from workloads.hparams import resolve_params

    def bad(key: str, problem: str) -> GridError:
        return GridError(path, key, problem)

    def params_error(msg: str) -> GridError:
        """The workload names the section and key ("params.ga: unknown key 'lrr' ..."): the error's key."""
        m = re.match(r"^(params\.[\w-]+(?:\.[\w-]+)?):\s*(.*)$", msg, re.S)
        return bad(m.group(1), m.group(2)) if m else bad("params", msg)

    if not _NAME.match(f.name):
        raise bad("name", f"{f.name!r} must match [a-z0-9_-]+")
    if f.dataset not in DATASETS:
        raise bad("dataset", f"unknown dataset {f.dataset!r}; choose one of {', '.join(DATASETS)}")
    for key in ("n_train", "n_test"):
        if getattr(f, key) < 10:
            raise bad(key, f"must be at least 10, got {getattr(f, key)}")
    size = _dataset_size(f.dataset)
    if size is not None and f.n_train + f.n_test > size:
        raise bad("n_train", f"n_train + n_test = {f.n_train + f.n_test} exceeds the {size} samples of {f.dataset!r}")

    if f.backend is not None and f.grid.backend is not None:
        raise bad("grid.backend", "backend is given both top-level and as a grid axis; keep one")
    backends = f.grid.backend if f.grid.backend is not None else [f.backend or "torch"]
    bkey = "grid.backend" if f.grid.backend is not None else "backend"

    axes: dict[str, tuple[Any, ...]] = {}
    for axis in AXES:
        values = backends if axis == "backend" else getattr(f.grid, axis)
        key = bkey if axis == "backend" else f"grid.{axis}"
        seen = set()
        for i, v in enumerate(values):
            if axis in SHOT_AXES and v != "exact" and v < 1:
                raise bad(f"{key}[{i}]", f"expected 'exact' or a positive integer, got {v!r}")
            if axis == "seed" and v < 0:
                raise bad(f"{key}[{i}]", f"seed must be a non-negative integer, got {v!r}")
            if v in seen:
                raise bad(f"{key}[{i}]", f"duplicate value {v!r}")
            seen.add(v)
        axes[axis] = tuple(None if (axis in SHOT_AXES and v == "exact") else v for v in values)

    for i, m in enumerate(axes["method"]):
        if m not in METHODS:
            raise bad(f"grid.method[{i}]", f"unknown method {m!r}; choose one of {', '.join(METHODS)}")
    for i, spec in enumerate(axes["forget"]):
        try:
            parse_forget(spec, f.n_train)
        except ValueError as e:
            raise bad(f"grid.forget[{i}]", str(e)) from None
    for i, b in enumerate(axes["backend"]):
        try:
            validate_backend(b)
        except ValueError as e:
            raise bad(bkey if bkey == "backend" else f"{bkey}[{i}]", str(e)) from None
    circuits = _circuit_models(path, f.models, backends)  # joins MODELS: the checks below take them by name
    for i, m in enumerate(axes["model"]):
        if m not in MODELS:
            raise bad(f"grid.model[{i}]", f"unknown model {m!r}; choose one of {', '.join(MODELS)}")

    params = {k: dict(v) for k, v in f.params.items()}
    try:
        for model, method in itertools.product(axes["model"], axes["method"]):
            resolve_params(model, method, params)
    except ValueError as e:
        raise params_error(str(e)) from None

    if f.n_eval is not None and f.n_eval < 10:
        raise bad("n_eval", f"must be at least 10, got {f.n_eval}")
    verdicts = f.verdicts.model_dump(exclude_none=True)
    for key, v in verdicts.items():
        if not 0 < v <= MARGIN_MAX:
            raise bad(f"verdicts.{key}", f"must be a number in (0, {MARGIN_MAX:g}], got {v!r}")
    spec = GridSpec(name=f.name, path=str(path), dataset=f.dataset, n_train=f.n_train, n_test=f.n_test,
                    axes=axes, params=params, n_eval=f.n_eval, verdicts={k: float(v) for k, v in verdicts.items()},
                    circuits=circuits)
    # Cross-axis rules the workload knows (e.g. a sampling backend cannot evaluate 'exact'), per cell.
    for cfg in spec.cells(mod.CellConfig):
        if hasattr(cfg, "validate"):
            try:
                cfg.validate()
            except ValueError as e:
                axis, sep, problem = str(e).partition(": ")
                if sep and axis in AXES:
                    raise bad(f"grid.{axis}", problem) from None
                raise (params_error(str(e)) if str(e).startswith("params.") else bad("grid", str(e))) from None
    return spec


def _circuit_models(path: Path, entries: dict[str, Any], backends: list[str]) -> dict[str, str]:
    """Build and check each `models:` entry for the grid's backends (import, compile, the Statevector check,
    qubits) and register it with this process's model registry; name -> ref."""
    from workloads.models import BUILTINS, use_circuit_models
    from workloads.models.circuit import plan
    from workloads.quantum.compiled import CircuitError

    refs = {}
    for name, entry in entries.items():
        if not _NAME.match(name):
            raise GridError(path, f"models.{name}", "a model name must match [a-z0-9_-]+")
        if name in BUILTINS:
            raise GridError(path, f"models.{name}", f"{name!r} is a built-in model; give the circuit model another name")
        try:
            refs[name] = plan(name, entry, backends)
        except CircuitError as e:  # its message starts with models.<name>.<key>
            key, _, problem = str(e).partition(": ")
            raise GridError(path, key, problem) from None
    use_circuit_models(refs)
    return refs


def _dataset_size(dataset: str) -> int | None:
    """Number of samples in the dataset, so n_train + n_test is checked before any work."""
    try:
        from workloads.data.datasets import _raw  # cached, cheap: both datasets ship inside installed wheels
    except ImportError:
        return None
    return len(_raw(dataset)[1])
