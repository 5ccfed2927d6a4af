"""`qmu` end to end: SIGKILL of the driver then resume, status, query formats, exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import write_real_grid

pytestmark = pytest.mark.usefixtures("ray_local")
runner = CliRunner()


def qmu(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _reap(pids: list[int]) -> None:
    """Ray's local agents can outlive a SIGKILLed driver; end exactly the ones that driver started."""
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _stored(cells_dir: Path) -> int:
    """Cells committed so far: the driver commits them in group files, one or more rows each."""
    n = 0
    for f in cells_dir.glob("*.parquet"):
        try:
            n += pq.read_metadata(f).num_rows
        except OSError:  # renamed away between the listing and the read
            pass
    return n


@pytest.mark.timeout(300)
def test_sigkill_driver_midway_then_resume_equals_clean_run(tmp_path: Path) -> None:
    grid = write_real_grid(tmp_path / "g.yaml", methods="none, retrain, finetune, ga, ssd, rga",
                           eval_shots="exact, 16", seeds="0")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    res = qmu("run", str(grid), "--results", str(clean))
    assert res.exit_code == 0, res.output

    # the driver SIGKILLs itself right after its third cell is committed (harness/runner.py's test hook), a
    # point that does not depend on how the load on the machine happened to batch the cells
    n_before = 3
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(grid), "--results", str(killed),
                             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "QMU_TEST_KILL_AFTER_CELLS": str(n_before)})
    cells_dir = killed / "cells" / "grid=real"
    children: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            children = sorted(set(children) | set(_descendants(proc.pid)))
            time.sleep(0.05)
        assert proc.poll() == -signal.SIGKILL, f"the driver was not killed by its hook (exit {proc.poll()})"
    finally:
        if proc.poll() is None:
            proc.kill()
        time.sleep(1)
        _reap(children)

    assert _stored(cells_dir) == n_before
    for f in (killed / "cells").rglob("*.parquet"):  # whatever the kill left is readable
        pq.read_table(f)
    status = qmu("status", "--results", str(killed))
    assert status.exit_code == 0
    line = next(ln for ln in status.output.splitlines() if "real" in ln)
    assert [c.strip() for c in line.split("│")[1:-1]] == ["real", "12", str(n_before), "0", "0", str(12 - n_before)]

    res = qmu("run", str(grid), "--results", str(killed))
    assert res.exit_code == 0, res.output
    assert f"{12 - n_before} cells done, 0 failed, {n_before} reused of 12" in res.output
    assert f"results: {killed}" in res.output  # the absolute path of the results

    def ids(root: Path) -> list[str]:
        out = qmu("query", "select cell_id from cells order by cell_id", "--results", str(root), "--format", "json")
        return [r["cell_id"] for r in json.loads(out.output)]

    assert ids(killed) == ids(clean) and len(set(ids(killed))) == 12
    q = ("select count(*) n, count(distinct cell_id || split || sample_index) d, "
         "count(*) filter (where split <> 'population') own from examples")
    out = json.loads(qmu("query", q, "--results", str(killed), "-f", "json").output)[0]
    assert out["n"] == out["d"] and out["own"] == 12 * 300
    # deterministic science: the resumed store has the same numbers as the clean one
    q = "select cell_id, mia_success, acc_test_retain from cells order by cell_id"
    assert qmu("query", q, "--results", str(killed), "-f", "csv").output == \
        qmu("query", q, "--results", str(clean), "-f", "csv").output


@pytest.mark.timeout(120)
def test_failed_cells_exit_1_rest_stored_and_query_formats(tmp_path: Path, trivial_workload) -> None:
    grid = tmp_path / "g.yaml"
    write_real_grid(grid, name="fails", methods="none, ga", eval_shots="exact")
    text = grid.read_text().replace("params:\n", "params:\n  trivial: {fail_method: ga}\n")
    grid.write_text(text + "verdicts: {auc_margin: 0.07}\n")
    results = tmp_path / "r"
    res = qmu("run", str(grid), "--results", str(results))
    assert res.exit_code == 1, res.output
    assert "1 cells done, 1 failed" in res.output and "trivial failure of method ga" in res.output
    # the manifest carries the grid's fingerprint, which lets a finished re-run skip Ray (test_cli_status.py)
    manifest = json.loads((results / "manifests" / "grid=fails.json").read_text())
    assert manifest["fingerprint"]
    assert manifest["verdicts"] == {"auc_margin": 0.07}  # the report's margins come from here
    from harness.identity import source_commit

    assert manifest["source_commit"] == source_commit()  # the whole tree's commit, beside the science's hash

    csv = qmu("query", "select method, status, eval_shots from cells order by method", "--results", str(results),
              "--format", "csv")
    assert csv.exit_code == 0 and csv.output.splitlines() == ["method,status,eval_shots", "ga,failed,", "none,ok,"]
    js = json.loads(qmu("query", "select method, error from cells order by method", "--results", str(results),
                        "-f", "json").output)
    assert js[1]["error"] is None and "trivial failure" in js[0]["error"]
    table = qmu("query", "select method, status from cells order by method", "--results", str(results))
    assert table.exit_code == 0 and "failed" in table.output and "(2 rows)" in table.output
    status = qmu("status", "--results", str(results))
    line = next(ln for ln in status.output.splitlines() if "fails" in ln)
    assert [c.strip() for c in line.split("│")[1:-1]] == ["fails", "2", "1", "1", "0", "0"]


@pytest.mark.parametrize("command", [["status"], ["query", "select 1"], ["report"]])
@pytest.mark.parametrize("root", ["missing", "empty"])
def test_no_store_exits_2_naming_the_path(tmp_path: Path, command: list[str], root: str) -> None:
    path = tmp_path / "r"
    if root == "empty":
        path.mkdir()
    res = qmu(*command, "--results", str(path))
    assert res.exit_code == 2, res.output
    assert f"--results {path}: no result store there" in res.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ([] if root == "missing" else ["r"])


def test_bench_report_hw_commands_are_mounted(tmp_path: Path) -> None:
    assert qmu("bench", "nope").exit_code == 2
    hw = qmu("hw", "--help")
    assert hw.exit_code == 0 and all(c in hw.output for c in ("estimate", "submit", "collect", "status"))
    top = qmu("--help").output
    assert all(c in top for c in ("run", "status", "query", "report", "hw", "bench"))
    for cmd in ("run", "status", "query", "report", "bench", "hw"):  # -h is --help everywhere, with examples
        h = qmu(cmd, "-h")
        assert h.exit_code == 0 and "Usage:" in h.output, h.output
        assert cmd == "hw" or "Examples:" in h.output
    assert all(o in qmu("report", "--help").output for o in ("--grid", "--compare", "--replication", "--out"))
    assert "--max-qpu-seconds" in qmu("run", "-h").output and "--watch" in qmu("status", "-h").output


def test_help_examples_align_their_comments() -> None:
    from harness.ui import examples

    long = 'qmu query "select method, avg(mia_auc) from cells group by method"'  # no comment: no push
    text = examples("qmu status   # grids", "qmu run grids/paper.yaml --dry-run # the cost", long)
    lines = text.splitlines()[2:]
    assert [ln.index("#") for ln in lines[:2]] == [38, 38] and lines[2] == f"  {long}"
    res = CliRunner().invoke(app, ["-h"], prog_name="qmu")
    cols = {ln.index(" # ") for ln in res.output.splitlines() if ln.startswith("    qmu ") and " # " in ln}
    commands = res.output.split("Commands:")[1].split("Examples:")[0]
    assert len(cols) == 1 and "..." not in commands  # one comment column; no command summary cut short


@pytest.mark.slow  # kept out of the default suite to hold it near 10 min on 2 cores (2026-12-02 durations)
@pytest.mark.timeout(120)
def test_local_ray_start_prints_no_token_notice(tmp_path: Path) -> None:
    """Ray 2.60 announces on every local start that token authentication is on; `qmu run` keeps stderr for
    what the user must act on."""
    code = "from harness.runner import connect; import ray; connect(workers=1); ray.shutdown()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                       cwd=Path(__file__).parent.parent, env={**os.environ, "HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert "Token authentication is enabled" not in p.stderr
    from harness.runner import _SecureDefaultNotice
    insecure = logging.LogRecord("ray", logging.WARNING, "", 0, "Token authentication is disabled for this Ray "
                                 "cluster. Anyone with network access ...", None, None)
    assert _SecureDefaultNotice().filter(insecure)  # the warning about an open cluster still passes
