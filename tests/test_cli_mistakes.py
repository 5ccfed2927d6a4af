"""User mistakes through the real `qmu` CLI: each exits 2 with one line naming the file, key or flag, without a
traceback and without writing a file. Also: the read-only `qmu query`, and `qmu run` on an ibm: backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

TOKEN = "planted-FAKE-token-93c1d0a7b2e4"
GOOD = """\
name: g
dataset: digits
n_train: 100
n_test: 50
grid:
  model: [qnn-angle-l2]
  forget: ["class:4"]
  method: [none]
  eval_shots: [exact]
"""


def _grid(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def _store(root: Path) -> None:
    """A real store with one cell, one manifest and a hardware ledger record."""
    from harness.store import ResultStore

    s = ResultStore(str(root))
    s.write_cell("g", "c1", {"model": "qnn-angle-l2", "forget": "class:4", "method": "none", "seed": 0,
                             "backend": "torch", "status": "ok", "mia_success": 0.5}, None)
    s.write_manifest("g", {"grid": "g", "cells": ["c1"]})


# (id, files to create: name -> text ('STORE' builds a store), argv, text the one-line message must contain)
MISTAKES = [
    ("missing grid file", {}, ["run", "nope.yaml"], "nope.yaml: grid file: cannot read it"),
    ("grid is a folder", {"d/": ""}, ["run", "d"], "d: grid file: cannot read it"),
    ("invalid yaml", {"g.yaml": "name: [unclosed"}, ["run", "g.yaml"], "g.yaml: grid file: not valid YAML: line 1, column 16: expected ',' or ']'"),
    ("grid is a list", {"g.yaml": "- a\n- b\n"}, ["run", "g.yaml"],
     "g.yaml: (top level): expected a mapping of keys (name: ..., grid: ...), got a list"),
    ("unknown top key", {"g.yaml": GOOD + "colour: red\n"}, ["run", "g.yaml"], "colour: unknown key"),
    ("unknown axis", {"g.yaml": GOOD + "  flavour: [x]\n"}, ["run", "g.yaml"], "grid.flavour: unknown key"),
    ("unknown method", {"g.yaml": _grid("method: [none]", "method: [nonee]")}, ["run", "g.yaml"],
     "grid.method[0]: unknown method 'nonee'"),
    ("unknown model", {"g.yaml": _grid("model: [qnn", "model: [qnnn")}, ["run", "g.yaml"], "unknown model"),
    ("unknown backend", {"g.yaml": GOOD + "backend: quantum-cloud\n"}, ["run", "g.yaml"], "unknown backend"),
    ("unknown fake backend", {"g.yaml": GOOD + "backend: fake:FakeNowhere\n"}, ["run", "g.yaml"],
     "unknown fake backend"),
    ("zero shots", {"g.yaml": _grid("eval_shots: [exact", "eval_shots: [0")}, ["run", "g.yaml"],
     "grid.eval_shots[0]: expected 'exact' or a positive integer, got 0"),
    ("text shots", {"g.yaml": _grid("eval_shots: [exact", "eval_shots: [lots")}, ["run", "g.yaml"],
     "expected 'exact' or a positive integer, got 'lots'"),
    ("duplicate seed", {"g.yaml": GOOD + "  seed: [0, 0]\n"}, ["run", "g.yaml"], "grid.seed[1]: duplicate value 0"),
    ("markup in a value", {"g.yaml": _grid("method: [none", 'method: ["[/x]"')}, ["run", "g.yaml"],
     "unknown method '[/x]'"),
    ("bad params key", {"g.yaml": GOOD + "params:\n  ga: {lrr: 1}\n"}, ["run", "g.yaml"], "params.ga"),
    ("bad results uri", {"g.yaml": GOOD}, ["run", "g.yaml", "--results", "foo://bar"], "--results 'foo://bar'"),
    ("results is a file", {"g.yaml": GOOD, "r": "x"}, ["run", "g.yaml", "--results", "r"], "is a file"),
    ("results under a file", {"g.yaml": GOOD, "r": "x"}, ["run", "g.yaml", "--results", "r/sub"],
     "r is a file, so no store can be under it"),
    ("results not creatable", {"g.yaml": GOOD}, ["run", "g.yaml", "--results", "/proc/qmu-nope"],
     "--results /proc/qmu-nope: cannot create it"),
    ("status, results under a file", {"r": "x"}, ["status", "--results", "r/sub"], "is a file, so no store"),
    ("unreachable address", {"g.yaml": GOOD}, ["run", "g.yaml", "--address", "127.0.0.1:9"],
     "--address 127.0.0.1:9: no Ray head answers there"),
    ("malformed address", {"g.yaml": GOOD}, ["run", "g.yaml", "--address", "headnode"], "--address 'headnode'"),
    ("zero workers", {"g.yaml": GOOD}, ["run", "g.yaml", "--workers", "0"], "--workers"),
    ("ibm without budget", {"g.yaml": _grid("[exact]", "[128]") + "backend: ibm:ibm_torino\n"}, ["run", "g.yaml"],
     "give --max-qpu-seconds N"),
    ("status, missing root", {}, ["status", "--results", "nowhere"], "no result store there"),
    ("status, empty root", {"r/": ""}, ["status", "--results", "r"], "no result store there"),
    ("query, missing root", {}, ["query", "select 1", "--results", "nowhere"], "no result store there"),
    ("query, misspelt table", {"r": "STORE"}, ["query", "select * from cels", "--results", "r"],
     'Did you mean "cells"?'),
    ("report, missing root", {}, ["report", "--results", "nowhere"], "no result store there"),
    ("report, empty root", {"r/": ""}, ["report", "--results", "r"], "no result store there"),
    ("report, unknown grid", {"r": "STORE"}, ["report", "--results", "r", "--grid", "nope"],
     "--grid 'nope': no such grid under"),
    ("report, compare a grid with itself", {"r": "STORE"}, ["report", "--results", "r", "--compare", "g", "g"],
     "--compare: both sides are 'g'; name two different grids or backends (grids: g)"),
    ("report, compare an unknown side", {"r": "STORE"}, ["report", "--results", "r", "--compare", "g", "nope"],
     "--compare: 'nope' is neither a grid nor a backend in the store (grids: g)"),
    ("bad sql", {"r": "STORE"}, ["query", "select nope from cells", "--results", "r"], "query: Binder Error"),
    ("sql syntax", {"r": "STORE"}, ["query", "selec 1", "--results", "r"], "query: Parser Error"),
    ("two statements", {"r": "STORE"}, ["query", "select 1; select 2", "--results", "r"], "exactly one statement"),
    ("copy to", {"r": "STORE"}, ["query", "COPY (SELECT 1) TO 'x.csv'", "--results", "r"],
     "query: COPY statements are not allowed"),
    ("copy into the root", {"r": "STORE"}, ["query", "COPY cells TO 'r/cells.csv'", "--results", "r"],
     "COPY statements are not allowed"),
    ("attach", {"r": "STORE"}, ["query", "ATTACH 'other.db' AS o", "--results", "r"], "ATTACH statements"),
    ("install", {"r": "STORE"}, ["query", "INSTALL httpfs", "--results", "r"], "LOAD statements"),
    ("set", {"r": "STORE"}, ["query", "SET enable_external_access = true", "--results", "r"], "SET statements"),
    ("read_text outside the root", {"r": "STORE"},
     ["query", "select * from read_text('/etc/hostname')", "--results", "r"], "Permission Error"),
    ("glob outside the root", {"r": "STORE"}, ["query", "select * from glob('/etc/*')", "--results", "r"],
     "Permission Error"),
    ("unknown format", {"r": "STORE"}, ["query", "select 1", "--results", "r", "-f", "xml"], "--format"),
    ("corrupt manifest", {"r": "STORE", "r/manifests/grid=g.json": "{not json"}, ["status", "--results", "r"],
     "grid=g.json: corrupt manifest"),
    ("hw collect, no ledger", {"r": "STORE"}, ["hw", "collect", "--results", "r"], "no hardware ledger there"),
    ("hw status, no ledger", {}, ["hw", "status", "--results", "nowhere"], "no hardware ledger there"),
    ("corrupt ledger", {"r": "STORE", "r/hw/jobs/j1.json": "{oops"}, ["hw", "status", "--results", "r"],
     "j1.json: corrupt ledger record"),
    ("torch and ibm mixed", {"g.yaml": _grid("[exact]", "[128]") + "  backend: [torch, ibm:ibm_torino]\n"},
     ["run", "g.yaml", "--max-qpu-seconds", "10"], "mixes torch with ibm:ibm_torino"),
    ("report, corrupt manifest", {"r": "STORE", "r/manifests/grid=g.json": "[1, 2"}, ["report", "--results", "r"],
     "grid=g.json: corrupt manifest"),
    ("hw on torch", {"g.yaml": GOOD}, ["hw", "submit", "g.yaml"], "'torch' is not a hardware backend"),
    ("empty grid file", {"g.yaml": ""}, ["run", "g.yaml"], "g.yaml: grid file: the file is empty"),
    ("query, unknown table", {"r": "STORE"}, ["query", "select * from nosuch", "--results", "r"],
     "The store's views are `cells` and `examples`"),
    ("usage: unknown command", {}, ["nope"], "error: qmu: No such command 'nope'; see `qmu -h`"),
    ("usage: unknown flag", {"g.yaml": GOOD}, ["run", "g.yaml", "--bogus"], "qmu run: No such option: --bogus"),
    ("usage: missing argument", {}, ["run"], "qmu run: Missing argument 'GRID.yaml'"),
    ("usage: bad flag value", {"g.yaml": GOOD}, ["run", "g.yaml", "--workers", "0"], "Invalid value for '--workers'"),
    ("usage: hw flag", {}, ["hw", "status", "--nope"], "qmu hw status: No such option: --nope"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def test_at_least_twenty_mistakes() -> None:
    assert len(MISTAKES) >= 20 and len({m[0] for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("name,files,argv,expect", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistake_exits_2_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                              files: dict[str, str], argv: list[str], expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved qiskit account
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)  # planted: must never be printed or written
    for rel, text in files.items():
        if text == "STORE":
            _store(tmp_path / rel)
        elif rel.endswith("/"):
            (tmp_path / rel).mkdir(parents=True)
        else:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text)
    before = _tree(tmp_path)
    res = CliRunner().invoke(app, argv, prog_name="qmu")
    out = res.output
    assert res.exit_code == 2, f"{name}: exit {res.exit_code}\n{out}\n{res.exception!r}"
    assert isinstance(res.exception, SystemExit) and "Traceback" not in out
    assert expect in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1 and not out.split(errors[0], 1)[1].strip(), out  # one line, nothing after it
    if ".yaml: " in expect or name.startswith("usage:"):  # nothing before the line either (no usage block)
        assert out.strip().splitlines() == errors, out
    assert TOKEN not in out
    assert _tree(tmp_path) == before, "a mistake wrote a file"


@pytest.mark.slow  # kept out of the default suite to hold it near 10 min on 2 cores (2026-12-02 durations)
def test_mistakes_in_a_real_process_print_no_traceback(tmp_path: Path) -> None:
    """The same exit 2 from a real `python -m harness.cli` process: stderr has the one line, no traceback."""
    bad = tmp_path / "g.yaml"
    bad.write_text(_grid("method: [none", 'method: ["[red]x[/red]"'))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for argv in (["run", str(bad)], ["status", "--results", str(tmp_path / "none")],
                 ["query", "COPY (SELECT 1) TO 'x.csv'", "--results", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr
    assert "unknown method '[red]x[/red]'" in subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(bad)], capture_output=True, text=True, cwd=tmp_path,
        env=env, timeout=300).stderr  # markup is shown as typed, not interpreted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml"]


# ------------------------------------------------------------------------------------------------------
# read-only query


def test_query_connection_is_locked(tmp_path: Path) -> None:
    """Below the statement check, the product's own connection refuses new settings, and its temp folder is a
    private one that is gone afterwards (DuckDB's default, `.tmp` under the working directory, is readable)."""
    import duckdb

    from harness.sql import sandbox
    from harness.store import ResultStore

    _store(tmp_path / "r")
    with sandbox(ResultStore(str(tmp_path / "r"))) as con:
        assert con.execute("select cell_id, status from cells").fetchall() == [("c1", "ok")]
        for setting in ("enable_external_access = true", "lock_configuration = false", "allowed_directories = ['/']",
                        "temp_directory = '.tmp'"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(f"SET {setting}")
        tmp = con.execute("select current_setting('temp_directory')").fetchone()[0]
        assert os.path.isdir(tmp) and os.path.basename(tmp).startswith("qmu-query-")
    assert not os.path.exists(tmp)


# ------------------------------------------------------------------------------------------------------
# qmu run on ibm: backends: never an unbudgeted device call


def test_run_on_ibm_without_budget_exits_2_before_any_device_call(tmp_path: Path, monkeypatch) -> None:
    import qiskit_ibm_runtime

    from workloads.quantum import backends as wb

    calls: list[str] = []

    def tripwire(*a, **k):  # any attempt to reach the service is recorded (and fails the test below)
        calls.append("service")
        raise AssertionError("device call")

    monkeypatch.setattr(wb.ibm, "runtime_service", tripwire)  # where the ibm backend reaches the service
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", tripwire)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "ibm.yaml"
    grid.write_text(GOOD.replace("[exact]", "[128]") + "backend: ibm:ibm_torino\n")
    res = CliRunner().invoke(app, ["run", str(grid), "--results", str(tmp_path / "res")])
    assert res.exit_code == 2, res.output
    assert "--max-qpu-seconds" in res.output and "qmu hw submit" in res.output
    assert calls == [] and TOKEN not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ibm.yaml"]


def test_run_on_ibm_with_budget_but_no_credentials_exits_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved qiskit account either
    grid = tmp_path / "ibm.yaml"
    grid.write_text(GOOD.replace("[exact]", "[128]") + "backend: ibm:ibm_torino\n")
    res = CliRunner().invoke(app, ["run", str(grid), "--results", str(tmp_path / "res"), "--max-qpu-seconds", "60"])
    assert res.exit_code == 2, res.output
    assert "QISKIT_IBM_TOKEN" in res.output and "ibm:ibm_torino" in res.output
    assert not (tmp_path / "res").exists()
