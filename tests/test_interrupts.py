"""Interrupts and edges: `qmu report` swaps a finished build in (an interrupted one leaves the old report),
--out is checked before any work, the default report folder is per grid, and a killed driver's Ray ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app


def _store(root: Path, grids: tuple[str, ...] = ("g",)) -> None:
    from harness.store import ResultStore

    s = ResultStore(str(root))
    for g in grids:
        s.write_cell(g, f"{g}1", {"model": "qnn-angle-l2", "forget": "class:4", "method": "none", "seed": 0,
                                  "backend": "torch", "status": "ok", "mia_success": 0.5, "code_version": "v1"}, None)
        s.write_manifest(g, {"grid": g, "cells": [f"{g}1"], "code_version": "v1"})


def _qmu(*argv: str):
    return CliRunner().invoke(app, list(argv), prog_name="qmu")


def test_interrupted_report_leaves_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import build

    _store(tmp_path / "r")
    assert _qmu("report", "--results", str(tmp_path / "r")).exit_code == 0
    out = tmp_path / "r" / "report" / "g"  # the default folder is the grid's
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("report.html") in before

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "render_html", ctrl_c)  # the last step of a build
    res = _qmu("report", "--results", str(tmp_path / "r"))
    assert res.exit_code == 130 and res.output.startswith("interrupted: ") and "is as it was" in res.output
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["g"]  # no half-built folder left beside it


def test_report_folder_is_per_grid(tmp_path: Path) -> None:
    _store(tmp_path / "r", ("a", "b"))
    for g in ("a", "b"):
        assert _qmu("report", "--results", str(tmp_path / "r"), "--grid", g).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "r" / "report").iterdir()) == ["a", "b"]
    assert "qmu-bench report: a" in (tmp_path / "r" / "report" / "a" / "report.md").read_text()


@pytest.mark.parametrize("out,expect", [("README.md", "is a file"), ("README.md/sub", "README.md is a file"),
                                        ("notes", "holds files other than a report")])
def test_out_is_checked_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str,
                                        expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    _store(tmp_path / "r")
    (tmp_path / "README.md").write_text("# mine\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    res = _qmu("report", "--results", "r", "--grid", "g", "--out", out)
    assert res.exit_code == 2 and res.output.startswith(f"error: --out {out}: ") and expect in res.output, res.output
    assert len(res.output.splitlines()) == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.timeout(120)
def test_sigkill_of_the_driver_ends_its_ray_processes(tmp_path: Path) -> None:
    """Ray's agents otherwise wait about a minute on the dead GCS (measured: 62 s with Ray 2.60)."""
    import psutil

    from harness.reaper import ray_processes

    code = "from harness.runner import connect; import time; connect(workers=1); print('up', flush=True); time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=Path(__file__).parent.parent, env={**os.environ, "HOME": str(tmp_path)})
    try:
        assert proc.stdout.readline().strip() == "up"
        deadline = time.time() + 30
        while time.time() < deadline and not any("Agent" in psutil.Process(p).name()
                                                 for p in ray_processes(proc.pid) if psutil.pid_exists(p)):
            time.sleep(0.5)
        time.sleep(1)
        ray_procs = ray_processes(proc.pid)
        assert ray_procs, "no Ray process under the driver"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 15
    left = ray_procs
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = {p: t for p, t in ray_procs.items() if psutil.pid_exists(p) and psutil.Process(p).create_time() == t
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    from harness.reaper import end

    end(left)  # never leave them running, even when the test fails
    assert not left, f"Ray processes outlived the driver: {left}"


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("ray_local")
def test_a_cluster_that_cannot_run_the_code_is_named_and_refused(tmp_path: Path, trivial_workload: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--address auto` joins whatever Ray runs here (the test's own); workers that run other code exit 2."""
    import tests.support.trivial as trivial
    from harness.runner import ClusterMismatch, check_cluster

    assert check_cluster(trivial_workload, trivial.code_version).startswith("the Ray cluster at ")
    with pytest.raises(ClusterMismatch, match="cannot import no_such_module"):
        check_cluster("no_such_module", "x")
    grid = tmp_path / "g.yaml"
    from tests.conftest import write_real_grid

    write_real_grid(grid, name="c", methods="none", eval_shots="exact")
    monkeypatch.setattr(trivial, "code_version", "edited-here")  # this checkout's code differs from the workers'
    res = _qmu("run", str(grid), "--results", str(tmp_path / "r"), "--address", "auto")
    assert res.exit_code == 2, res.output
    assert "error: --address auto: the Ray cluster at " in res.output and "run code trivial-1" in res.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.parquet"))
