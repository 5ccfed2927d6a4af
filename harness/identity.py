"""Cell ids, content-hashed stage keys and the stage DAG that a set of cells expands into.

A cell's id hashes its grid name and full config, so it is stable across runs and machines. A stage's key
hashes the stage's spec (from the workload), the workload's code version and the keys of the stages it
consumes, so two cells that need the same original model share one `train` stage, and a stored artifact is
reused by any later run, in any grid, that asks for the same key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

STAGES = ("train", "reference", "shadow", "replica", "unlearn", "ulira", "attack", "evaluate")  # dependency order
# Which kinds a stage consumes (docs/grid.md, Reuse and resuming): train -> {unlearn, attack} -> evaluate; the attack also
# consumes a cell's reference models (kind `reference`, named `reference.I`, which consume nothing); with U-LiRA,
# `ulira` unlearns the `shadow` models per method, and evaluate reads it and a retrained `replica.I`.
DEPS: dict[str, tuple[str, ...]] = {
    "train": (),
    "reference": (),
    "shadow": (),
    "replica": (),
    "unlearn": ("train",),
    "ulira": ("shadow",),
    "attack": ("train", "reference"),
    "evaluate": ("train", "unlearn", "attack", "replica", "ulira"),
}


# "off": every stage goes alone, as before groups existed (benchmarks/bench_grouping.py times the difference).
GROUPS_ENV = "QMU_GROUPS"


def group_of(cfg: Any) -> str | None:
    """The group a stage's config belongs to (its `group_id()`), or None: stages of one group (reference models
    that differ only in their index, a train spec's seeds) are dispatched together and trained as one
    (`train_many`)."""
    fn = getattr(cfg, "group_id", None)
    return fn() if callable(fn) and os.environ.get(GROUPS_ENV) != "off" else None


def kind_of(name: str) -> str:
    """The kind of a stage name: `reference.3` -> `reference`."""
    return name.partition(".")[0]


def _ordered(specs: dict[str, dict]) -> list[str]:
    """Stage names in dependency order (by kind, then as the workload listed them)."""
    return sorted(specs, key=lambda n: STAGES.index(kind_of(n)))


def _dep_names(name: str, names: list[str]) -> list[str]:
    return [n for d in DEPS[kind_of(name)] for n in names if kind_of(n) == d]


def canonical(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) of a JSON-able object; tuples become lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:n]


def config_dict(cfg: Any) -> dict[str, Any]:
    """The cell config as plain JSON-able data (params as a dict of dicts)."""
    d = dataclasses.asdict(cfg)
    # Optional fields left at a None default are omitted, so adding one keeps every existing cell id.
    for f in dataclasses.fields(cfg):
        if f.default is None and d.get(f.name) is None:
            d.pop(f.name, None)
    if hasattr(cfg, "params_dict"):
        d["params"] = cfg.params_dict()
    return d


def cell_id(grid: str, cfg: Any) -> str:
    """Stable id of a cell within a grid; the grid is part of it so ids are unique across the store."""
    return digest({"grid": grid, "cell": config_dict(cfg)}, 16)


def stage_keys(specs: dict[str, dict], code_version: str) -> dict[str, str]:
    """Key of each named stage: hash of its kind, spec, the code version and the keys it consumes (keys chain)."""
    keys: dict[str, str] = {}
    names = _ordered(specs)
    for name in names:
        keys[name] = digest({"stage": kind_of(name), "spec": specs[name], "code": code_version,
                             "deps": [keys[d] for d in _dep_names(name, names)]}, 24)
    return keys


@dataclass
class StageNode:
    """One unit of work: `cfg` is the config it runs with, from any cell that needs it (all such cells give the
    same spec)."""

    key: str
    kind: str
    cfg: Any
    deps: tuple[str, ...]
    cells: list[str] = field(default_factory=list)  # ids of cells whose result needs this stage
    group: str | None = None  # the group it trains with (group_of its cfg), set once by build_plan


@dataclass(frozen=True)
class PlannedCell:
    cell_id: str
    cfg: Any
    keys: dict[str, str]


@dataclass
class Plan:
    """Cells plus the deduplicated stage DAG they need, in first-seen order."""

    cells: list[PlannedCell]
    stages: dict[str, StageNode]

    def count(self, kind: str) -> int:
        return sum(1 for s in self.stages.values() if s.kind == kind)

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {k: [] for k in self.stages}
        for s in self.stages.values():
            for d in s.deps:
                out[d].append(s.key)
        return out


def build_plan(grid: str, cfgs: list[Any], stage_specs: Callable[[Any], dict[str, dict]],
               code_version: str) -> Plan:
    """Expand cells into their stages, merging stages with equal keys."""
    cells: list[PlannedCell] = []
    stages: dict[str, StageNode] = {}
    for cfg in cfgs:
        specs = stage_specs(cfg)
        keys = stage_keys(specs, code_version)
        cid = cell_id(grid, cfg)
        cells.append(PlannedCell(cid, cfg, keys))
        names = _ordered(specs)
        for name in names:
            node = stages.get(keys[name])
            if node is None:
                # a stage may run with its own config (a reference model's), which the workload derives
                scfg = cfg.stage_config(name) if hasattr(cfg, "stage_config") else cfg
                node = stages[keys[name]] = StageNode(keys[name], kind_of(name), scfg,
                                                      tuple(keys[d] for d in _dep_names(name, names)))
            node.cells.append(cid)
    _size_groups(stages)
    return Plan(cells, stages)


def _size_groups(stages: dict[str, StageNode]) -> None:
    """Each stage's group, computed once (the dispatcher reads it for every ready stage); a groupable stage's
    config carries how many stages of its group the plan holds (its `group_size`, which prices it; 1 with groups
    off): a train stage learns here how many seeds of the grid train with it."""
    for node in stages.values():
        node.group = group_of(node.cfg)
    sizes = Counter(node.group for node in stages.values())
    for node in stages.values():
        if getattr(node.cfg, "group_size", None) is not None:
            size = 1 if node.group is None else sizes[node.group]
            node.cfg = dataclasses.replace(node.cfg, group_size=size)


def source_commit() -> str | None:
    """The git commit of the checkout this code runs from ('1a2b3c4d5e6f', with '-dirty' when tracked files
    differ from it), or None outside one. The code version hashes only the science (workloads/); this names
    the whole tree a run or a report came from."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        # an installed copy inside some other repository (a venv in a checkout) is not that repository's code
        if git("ls-files", "--error-unmatch", "harness/identity.py").returncode:
            return None
        sha = git("rev-parse", "--short=12", "HEAD")
        if sha.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty else "")
