"""Every way a `qmu` command ends is one line: an unexpected error is `error: TYPE: message` (exit 1) with a
hint that QMU_DEBUG=1 shows the traceback; Ctrl-C is one `interrupted:` line (exit 130)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.store import ResultStore

ROOT = Path(__file__).resolve().parent.parent
INJECT = """\
import sys, harness.cli, harness.store
def boom(*a, **k):
    raise {exc}
harness.store.ResultStore.grids = boom
sys.argv[0] = "qmu"
harness.cli.main()
"""


def _boom(*a, **k):
    raise RuntimeError("disk on fire\nsecond line")


@pytest.mark.parametrize("argv", [["status"], ["query", "select 1"], ["report"], ["compact"]])  # all list grids
def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    argv: list[str]) -> None:
    monkeypatch.setattr(ResultStore, "grids", _boom)
    monkeypatch.delenv("QMU_DEBUG", raising=False)
    res = CliRunner().invoke(app, [*argv, "--results", str(tmp_path)], prog_name="qmu")
    assert res.exit_code == 1, (res.output, res.exception)
    assert isinstance(res.exception, SystemExit)
    assert res.output == "error: RuntimeError: disk on fire (QMU_DEBUG=1 shows the traceback)\n"


def test_qmu_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ResultStore, "grids", _boom)
    monkeypatch.setenv("QMU_DEBUG", "1")
    res = CliRunner().invoke(app, ["status", "--results", str(tmp_path)], prog_name="qmu")
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output and "in _boom" in res.output
    assert res.output.splitlines()[-1] == "error: RuntimeError: disk on fire"


def test_an_unexpected_error_in_a_real_process(tmp_path: Path) -> None:
    """The console script's process: stderr is the one line, nothing on stdout, exit 1."""
    env = {k: v for k, v in os.environ.items() if k != "QMU_DEBUG"}
    code = INJECT.format(exc="KeyError('cells')")
    r = subprocess.run([sys.executable, "-c", code, "status", "--results", str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
    assert (r.returncode, r.stdout) == (1, ""), r.stderr
    assert r.stderr == "error: KeyError: 'cells' (QMU_DEBUG=1 shows the traceback)\n"


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(tmp_path: Path) -> None:
    code = INJECT.format(exc="KeyboardInterrupt()")
    r = subprocess.run([sys.executable, "-c", code, "status", "--results", str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 130, r.stderr
    assert r.stderr.startswith("interrupted: ") and r.stderr.count("\n") == 1 and "\x1b" not in r.stderr, r.stderr
