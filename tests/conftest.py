"""Shared fixtures. Ray fixtures start a real local Ray and always shut it down, so test modules that need a
different topology (a multi-node cluster) can follow."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.offline.netguard import OFFLINE_ENV, NetworkBlocked, install  # noqa: F401

OFFLINE = Path(__file__).parent / "support" / "offline"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's teardown, once every report is written.

    One CI run segfaulted (exit 139) in interpreter teardown after all 231 tests had passed: this process
    hosts Ray clients, moto's server threads, pyarrow's S3 client, DuckDB, qiskit-aer and torch thread pools
    at once, and their native finalisers run in no order we control. The tests' verdict is the exit status
    pytest computed; release what we can explicitly, then exit with it."""
    status = config.stash.get(_EXIT, None)
    if status is None:
        return
    _release_native_resources()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _release_native_resources() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    gc.collect()
    fs = sys.modules.get("pyarrow.fs")
    if fs is not None and hasattr(fs, "finalize_s3"):
        fs.finalize_s3()


_EXIT = pytest.StashKey[int]()


@pytest.fixture(scope="session", autouse=True)
def no_network() -> Iterator[None]:
    """Every test runs offline, and so does every Python process a test starts (the `qmu` subprocesses, Ray's
    workers and agents): they inherit a PYTHONPATH whose `sitecustomize` installs the same guard
    (tests/support/offline/). Ray's usage-stats report is switched off through the environment too."""
    undo = install()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(OFFLINE), os.environ.get("PYTHONPATH")) if p))
        mp.setenv(OFFLINE_ENV, "1")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        try:
            yield
        finally:
            undo()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A real local Ray with 2 CPUs for the tests of one module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def trivial_workload(monkeypatch: pytest.MonkeyPatch) -> str:
    """`qmu run` in this test runs the trivial workload (tests.support.trivial) instead of workloads.stages."""
    import harness.cli

    monkeypatch.setattr(harness.cli, "WORKLOAD", "tests.support.trivial")
    return "tests.support.trivial"


def make_spec(name: str = "t", *, methods: tuple[str, ...] = ("none", "ga", "ssd"),
              eval_shots: tuple[Any, ...] = (None, 16), seeds: tuple[int, ...] = (0,),
              models: tuple[str, ...] = ("qnn-angle-l2",), forget: tuple[str, ...] = ("class:4",),
              params: dict[str, dict[str, Any]] | None = None, dataset: str = "digits",
              n_train: int = 200, n_test: int = 100):
    """A GridSpec built in code (for the trivial workload, whose knobs are not real params)."""
    from harness.grid_spec import GridSpec

    axes = {"model": models, "forget": forget, "method": methods, "train_shots": (None,),
            "unlearn_shots": (None,), "eval_shots": eval_shots, "seed": seeds, "backend": ("torch",)}
    return GridSpec(name=name, path=f"<{name}>", dataset=dataset, n_train=n_train, n_test=n_test, axes=axes,
                    params=params or {})


# Small real cells: the angle model on sklearn digits with few epochs (each cell well under a second).
REAL_GRID = """\
name: {name}
dataset: digits
n_train: 200
n_test: 100
grid:
  model: [qnn-angle-l2]
  forget: ["class:4"]
  method: [{methods}]
  eval_shots: [{eval_shots}]
  seed: [{seeds}]
params:
  qnn-angle-l2: {{epochs: 3}}
  finetune: {{epochs: 1}}
  ga: {{max_epochs: 2}}
  rga: {{max_epochs: 2}}
  attack: {{epochs: 60}}
"""


def write_real_grid(path: Path, name: str = "real", methods: str = "none, retrain, ga",
                    eval_shots: str = "exact, 16", seeds: str = "0") -> Path:
    path.write_text(REAL_GRID.format(name=name, methods=methods, eval_shots=eval_shots, seeds=seeds))
    return path


def method_rows(base: Any, methods: tuple[str, ...], train: Any = None, attack: Any = None) -> dict[str, Any]:
    """The evaluated (row, examples) of `base` (a CellConfig) under each method, sharing one train and one
    attack stage (run here unless given)."""
    from dataclasses import replace

    from workloads.stages import attack_stage, evaluate_stage, train_stage, unlearn_stage

    train = train or train_stage(base)
    attack = attack or attack_stage(base, train.state)
    rows = {}
    for method in methods:
        cfg = replace(base, method=method)
        un = unlearn_stage(cfg, train.state)
        rows[method] = evaluate_stage(cfg, train.state, un.state, attack.state,
                                      costs={"train": train.cost, "unlearn": un.cost, "attack": attack.cost})
    return rows
