"""`qmu status`: counts per grid, and `--watch` following a grid that another process is running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.store import ResultStore


def _cell(store: ResultStore, cid: str) -> None:
    store.write_cell("w", cid, {"model": "m", "forget": "class:4", "method": "none", "seed": 0, "backend": "torch",
                                "status": "ok"}, None)


def test_status_watch_follows_a_running_grid_until_nothing_is_pending(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write_manifest("w", {"grid": "w", "cells": ["a", "b"]})
    _cell(store, "a")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "status", "--watch", "--interval", "0.5",
                             "--results", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.time() + 120
        lines = []
        while time.time() < deadline:  # the first refresh shows one cell pending
            line = proc.stdout.readline()
            lines.append(line)
            if "1 pending" in line or not line:
                break
        assert any("1 pending" in ln for ln in lines), "".join(lines) + proc.stderr.read()
        assert proc.poll() is None, "watch returned while a cell was pending"
        _cell(store, "b")  # the "run" finishes its last cell
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "0 pending" in out and "1 cells finished while watching" in out


def test_finished_grid_reruns_without_ray(tmp_path: Path, trivial_workload: str) -> None:
    """A store holding every cell of this exact grid file (and code): 'nothing to do', Ray never started.
    The store is filled directly here; tests/test_harness_cli.py checks that `qmu run` writes the fingerprint."""
    import ray
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.loading import load_grid
    from harness.runner import plan_grid
    from tests.conftest import write_real_grid

    grid = write_real_grid(tmp_path / "g.yaml", name="again", methods="none, ga", eval_shots="exact")
    res = str(tmp_path / "r")
    store = ResultStore(res)
    spec = load_grid(grid, trivial_workload)
    _, ids, cv = plan_grid(spec, None, trivial_workload)
    store.write_manifest("again", {"grid": "again", "cells": ids, "code_version": cv,
                                   "fingerprint": spec.fingerprint})
    for cid in ids:
        store.write_cell("again", cid, {"status": "ok", "mia_success": 0.5}, None)
    if ray.is_initialized():
        ray.shutdown()
    again = CliRunner().invoke(app, ["run", str(grid), "--results", res])
    assert again.exit_code == 0, again.output
    assert "again: nothing to do: all 2 cells are stored" in again.output and res in again.output
    assert not ray.is_initialized(), "a finished grid started Ray"
    # a changed grid file is not 'finished': the full path plans it (and finds the new cell)
    grid.write_text(grid.read_text().replace("method: [none, ga]", "method: [none, ga, ssd]"))
    dry = CliRunner().invoke(app, ["run", str(grid), "--results", res, "--dry-run"])
    assert dry.exit_code == 0 and "3 cells, 2 already done" in dry.output, dry.output
    assert not ray.is_initialized()
