"""The Ray runner on a real local Ray: runs, resumes without duplicates, reuses stages, survives killed
workers, records failures. Trivial cells keep it fast; one test runs real (small) cells end to end."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harness.grid_spec import load_grid
from harness.identity import cell_id
from harness.progress import Progress
from harness.runner import run_grid
from harness.store import ResultStore, connect_duckdb
from tests.conftest import make_spec, write_real_grid

TRIVIAL = "tests.support.trivial"
pytestmark = pytest.mark.usefixtures("ray_local")


def _cells(store: ResultStore):
    return connect_duckdb(store).execute("select * from cells").df()


def _files(root: Path, top: str) -> list[Path]:
    return sorted((root / top).rglob("*.parquet"))


@pytest.mark.timeout(120)
def test_runs_resumes_and_never_duplicates(tmp_path: Path) -> None:
    spec = make_spec(methods=("none", "ga", "ssd"), eval_shots=(None, 16, 128), seeds=(0, 1))
    store = ResultStore(str(tmp_path))
    s1 = run_grid(spec, store, impl=TRIVIAL, workers=2)
    assert (s1.cells_ok, s1.cells_failed, s1.cells_skipped) == (18, 0, 0)
    # 2 originals; 2 seeds x 3 methods unlearned; 2 seeds x 3 eval shots attacks; one evaluation per cell
    assert dict(s1.stages_run) == {"train": 2, "unlearn": 6, "attack": 6, "evaluate": 18}
    df = _cells(store)
    assert len(df) == 18 and df.cell_id.is_unique and set(df.status) == {"ok"}
    assert df.eval_shots.isna().sum() == 6  # exact stored as NULL
    assert set(df.cell_id) == {cell_id("t", c) for c in spec.cells(__import__(TRIVIAL, fromlist=["x"]).CellConfig)}
    # committed in group files (one per flush), each cell once
    assert sum(pq.read_metadata(f).num_rows for f in _files(tmp_path, "cells")) == 18
    # every artifact is a safetensors file (no pickles, no parquet, no temp files left), one per stage key
    artifacts = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert {p.suffix for p in artifacts} == {".safetensors"} and len(artifacts) == 2 + 6 + 6
    keys = {df[f"{k}_key"].iloc[i] for k in ("train", "unlearn", "attack") for i in range(len(df))}
    assert {p.stem for p in artifacts} == keys

    s2 = run_grid(spec, store, impl=TRIVIAL, workers=2)
    assert (s2.cells_ok, s2.cells_skipped) == (0, 18) and sum(s2.stages_run.values()) == 0
    df2 = _cells(store)
    assert len(df2) == 18 and df2.cell_id.is_unique
    assert sorted(df2.finished_at) == sorted(df.finished_at)  # untouched, not rewritten


@pytest.mark.slow  # kept out of the default suite to hold it near 10 min on 2 cores (2026-12-02 durations)
@pytest.mark.timeout(120)
def test_extending_an_axis_runs_only_new_stages(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    run_grid(make_spec(methods=("none", "ga"), eval_shots=(None,)), store, impl=TRIVIAL, workers=2)
    s = run_grid(make_spec(methods=("none", "ga"), eval_shots=(None, 16)), store, impl=TRIVIAL, workers=2)
    # the original model and both unlearned models are reused; only the new attack and evaluations run
    assert dict(s.stages_run) == {"attack": 1, "evaluate": 2}
    assert s.stages_reused["train"] == 1 and s.stages_reused["unlearn"] == 2 and s.cells_skipped == 2
    # a different grid that needs the same stages reuses them too (artifacts are keyed by content)
    s3 = run_grid(make_spec("other", methods=("ga",), eval_shots=(16,)), store, impl=TRIVIAL, workers=2)
    assert dict(s3.stages_run) == {"evaluate": 1}
    df = _cells(store)
    assert len(df) == 5 and df.cell_id.is_unique and sorted(df.grid.unique()) == ["other", "t"]


@pytest.mark.timeout(120)
def test_failed_stage_fails_its_cells_and_rerun_retries(tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    spec = make_spec(methods=("none", "ga"), eval_shots=(None, 16), params={"trivial": {"fail_if_exists": str(flag)}})
    store = ResultStore(str(tmp_path / "r"))
    s = run_grid(spec, store, impl=TRIVIAL, workers=2)
    assert (s.cells_ok, s.cells_failed) == (2, 2)
    df = _cells(store)
    failed = df[df.status == "failed"]
    assert set(failed.method) == {"ga"} and all("trivial failure of method ga" in e for e in failed.error)
    assert df[df.status == "ok"].error.isna().all()
    ex = connect_duckdb(store).execute("select count(*) from examples where cell_id in "
                                       "(select cell_id from cells where status='failed')").fetchone()[0]
    assert ex == 0
    flag.unlink()  # the cause goes away: a re-run retries only the failed cells
    s2 = run_grid(spec, store, impl=TRIVIAL, workers=2)
    assert (s2.cells_ok, s2.cells_failed, s2.cells_skipped) == (2, 0, 2)
    assert dict(s2.stages_run) == {"unlearn": 1, "evaluate": 2}
    df2 = _cells(store)
    assert len(df2) == 4 and df2.cell_id.is_unique and set(df2.status) == {"ok"}


class _KillNth(Progress):
    """Kills (SIGKILL) the worker process of the n-th started stage, a little after it started."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay, self.seen, self.killed = n, delay, 0, []

    def stage_started(self, node: Any, worker: dict[str, Any]) -> None:
        self.seen += 1
        if self.seen == self.n:
            pid = worker["pid"]
            self.killed.append((node.kind, pid))
            threading.Timer(self.delay, os.kill, (pid, signal.SIGKILL)).start()


@pytest.mark.timeout(180)
def test_killed_worker_is_replaced_and_result_complete(tmp_path: Path) -> None:
    spec = make_spec(methods=("none", "ga", "ssd"), eval_shots=(None, 16), seeds=(0, 1),
                     params={"trivial": {"sleep": 0.4}})
    store = ResultStore(str(tmp_path))
    killer = _KillNth(n=4, delay=0.15)
    s = run_grid(spec, store, impl=TRIVIAL, workers=2, progress=killer)
    assert killer.killed and s.retries >= 1
    assert (s.cells_ok, s.cells_failed) == (12, 0)
    df = _cells(store)
    assert len(df) == 12 and df.cell_id.is_unique and set(df.status) == {"ok"}
    ex = connect_duckdb(store).execute("select cell_id, count(*) n from examples group by 1").df()
    assert len(ex) == 12 and set(ex.n) == {4}


@pytest.mark.timeout(180)
def test_stage_that_keeps_crashing_fails_after_bounded_retries(tmp_path: Path) -> None:
    spec = make_spec(methods=("none", "ga"), eval_shots=(None,), params={"trivial": {"crash_method": "ga"}})
    store = ResultStore(str(tmp_path))
    s = run_grid(spec, store, impl=TRIVIAL, workers=2, max_retries=1)
    # Two counted attempts of the crashing stage, plus one batch death when it first crashed in a batch with
    # another stage (then each of them is retried alone, uncounted): which happens depends on timing.
    assert (s.cells_ok, s.cells_failed) == (1, 1) and s.retries in (2, 3)
    row = _cells(store).set_index("method").loc["ga"]
    assert row.status == "failed" and "after 2 attempts" in row.error


@pytest.mark.timeout(240)
def test_real_cells_end_to_end(tmp_path: Path) -> None:
    spec = load_grid(write_real_grid(tmp_path / "g.yaml", methods="none, retrain, ga", eval_shots="exact, 16"))
    store = ResultStore(str(tmp_path / "r"))
    t0 = time.time()
    s = run_grid(spec, store, workers=2)
    assert (s.cells_ok, s.cells_failed) == (6, 0), s.failures
    assert dict(s.stages_run) == {"train": 1, "unlearn": 3, "attack": 2, "evaluate": 6}  # shared; heldout fit in evaluate
    con = connect_duckdb(store)
    df = con.execute("select * from cells order by method, eval_shots").df()
    for col in ("mia_success", "mia_success_lo", "mia_success_hi", "mia_auc", "acc_train_retain",
                "acc_test_retain", "train_seconds", "eval_seconds", "circuit_executions"):
        assert df[col].notna().all(), col
    assert ((df.mia_success_lo <= df.mia_success) & (df.mia_success <= df.mia_success_hi)).all()
    assert (df.shots_total[df.eval_shots == 16] > 0).all() and set(df.dataset) == {"digits"}
    assert df.code_version.str.startswith("0.").all() and df.host.notna().all() and df.train_node.notna().all()
    # the shared original model: every cell reports the same training cost and train stage key
    assert df.train_key.nunique() == 1 and df.train_seconds.nunique() == 1
    ex = con.execute("select cell_id, split, count(*) n from examples group by 1, 2").df()
    own = ex[ex.split != "population"]  # train and test rows: every sample of the split, once
    assert set(own.groupby("cell_id").n.sum()) == {300}
    pop = ex[ex.split == "population"]  # the scored P_eval non-members, the same set for every cell
    assert len(pop) == df.cell_id.nunique() and pop.n.nunique() == 1 and pop.n.iloc[0] > 0
    assert time.time() - t0 < 120


@pytest.mark.timeout(120)
def test_progress_rich_on_terminal_plain_in_logs(tmp_path: Path) -> None:
    import io
    from collections import Counter

    from rich.console import Console

    from harness.progress import PlainProgress, RichProgress, make_progress

    spec = make_spec(methods=("none", "ga"), eval_shots=(None, 16), params={"trivial": {"fail_method": "ga"}})
    log = io.StringIO()
    s = run_grid(spec, ResultStore(str(tmp_path / "a")), impl=TRIVIAL, workers=2, progress=PlainProgress(log))
    lines = log.getvalue().splitlines()
    assert "4 cells, 0 already done" in lines[0]
    cells = [ln.split("] ", 1)[1] for ln in lines if "/ class:4 /" in ln]
    assert sorted(c.split()[0] for c in cells) == ["failed", "failed", "ok", "ok"]
    # a finished cell names model / forget / method / shots / seed and its two headline numbers
    ok = next(c for c in cells if c.startswith("ok"))
    assert "qnn-angle-l2 / class:4 / none / shots " in ok and "/ seed 0:" in ok
    assert "MIA success" in ok and "test acc" in ok
    assert any("trivial failure of method ga" in c for c in cells if c.startswith("failed"))
    assert any("start  train qnn-angle-l2 seed 0" in ln for ln in lines)
    # every stage that ran has a start line, also one that was queued behind another on its worker
    started = Counter(ln.split("] start  ", 1)[1] for ln in lines if "] start  " in ln)
    finished = Counter(ln.split("] done   ", 1)[1].split(" in ")[0] for ln in lines if "] done   " in ln)
    assert finished and finished <= started, (finished - started, lines)
    assert "cells 4/4 (failed 2)" in lines[-1] and "running 0" in lines[-1] and s.cells_failed == 2
    assert "eta" not in lines[-1]  # no ETA once nothing is left
    assert all("\x1b" not in ln for ln in lines)  # no terminal control codes in CI logs

    term = io.StringIO()
    run_grid(spec, ResultStore(str(tmp_path / "b")), impl=TRIVIAL, workers=2,
             progress=RichProgress(Console(file=term, force_terminal=True, width=120)))
    out = term.getvalue()
    assert "cells" in out and "stages" in out and "4/4" in out and "failed 2" in out
    assert isinstance(make_progress(io.StringIO()), PlainProgress)


# A process that compacts a store and SIGKILLs itself at one point of the compaction.
_COMPACT_AND_DIE = """
import os, signal, sys
from harness.store import ResultStore

point, root = sys.argv[1], sys.argv[2]
real_write, real_delete = ResultStore._write, ResultStore._delete_absorbed
calls = []

def write(self, path, data):
    if point == "before_swap" and path.endswith("current.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, path, data)

def delete(self, grid, ptr):
    calls.append(1)
    if point == "after_swap" and len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_delete(self, grid, ptr)

ResultStore._write, ResultStore._delete_absorbed = write, delete
ResultStore(root).compact("t")
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", ["before_swap", "after_swap"])
def test_sigkill_during_compaction_then_rerun_same_cells_no_duplicates(tmp_path: Path, point: str) -> None:
    import subprocess
    import sys

    flag = tmp_path / "broken"
    flag.touch()
    spec = make_spec(methods=("none", "ga", "ssd"), eval_shots=(None, 16), seeds=(0, 1),
                     params={"trivial": {"fail_if_exists": str(flag)}})
    store = ResultStore(str(tmp_path / "r"))
    s = run_grid(spec, store, impl=TRIVIAL, workers=2, compact=False)
    assert (s.cells_ok, s.cells_failed) == (4, 8)
    store.write_cell("t", "extra", {"model": "m", "status": "ok"}, None)  # a second pending file at least
    p = subprocess.run([sys.executable, "-c", _COMPACT_AND_DIE, point, store.root], cwd=Path(__file__).parent.parent,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}, timeout=120)
    assert p.returncode == -signal.SIGKILL
    df = _cells(store)
    assert len(df) == 13 and df.cell_id.is_unique  # no row twice, none missing, whatever the kill left
    flag.unlink()
    s2 = run_grid(spec, store, impl=TRIVIAL, workers=2, compact=True)
    assert (s2.cells_ok, s2.cells_failed, s2.cells_skipped) == (8, 0, 4)
    df2 = _cells(store)
    expected = {cell_id("t", c) for c in spec.cells(__import__(TRIVIAL, fromlist=["x"]).CellConfig)} | {"extra"}
    assert set(df2.cell_id) == expected and df2.cell_id.is_unique and len(df2) == 13
    assert set(df2[df2.cell_id != "extra"].status) == {"ok"}
    ex = connect_duckdb(store).execute("select cell_id, count(*) n, count(distinct sample_index) d "
                                       "from examples group by 1").df()
    assert len(ex) == 12 and set(ex.n) == {4} and set(ex.d) == {4}
    assert not list((tmp_path / "r" / "cells" / "grid=t").glob("*.parquet"))  # all folded in


def test_eta_scales_each_stage_kind_by_its_own_measured_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost model is off by different factors per kind (and per unlearning method); one global ratio hid
    4x slow attacks behind a fast training and promised 1m45s with 15 min to go."""
    from types import SimpleNamespace

    from harness import progress as pg

    est = {"train": 10.0, "attack": 1.0, "unlearn": 1.0}
    monkeypatch.setattr(pg, "stage_estimate", lambda kind, cfg: SimpleNamespace(seconds=est[kind] - 0.01))
    clock = [0.0]
    monkeypatch.setattr(pg.time, "time", lambda: clock[0])
    kinds = {"t": "train", "a": "attack", "r": "unlearn", "g": "unlearn", "s": "unlearn"}
    method = {"r": "retrain", "g": "ga", "s": "ssd"}
    nodes = {k: SimpleNamespace(key=k, kind=kinds[k[0]], cfg=SimpleNamespace(method=method.get(k[0])))
             for k in ("t0", "t1", "a0", "a1", "a2", "r0", "g0", "g1", "s0")}
    plan = SimpleNamespace(stages=nodes, cells=[], dependents=lambda: {k: [] for k in nodes})
    c = pg._Counts()
    c.start("g", 0, 0, plan)
    # training at half its estimate, an attack at 4x, retrain at half and ga at 3x
    for key, took in (("t0", 5.0), ("a0", 4.0), ("r0", 0.5), ("g0", 3.0)):
        c.stage_started(nodes[key], {"pid": 1})
        clock[0] += took
        c.stage_finished(nodes[key], "done")
    # left on one worker: t1 (10 s * 0.5), a1 and a2 (1 s * 4 each), g1 (1 s * 3): 16 s, and s0, a method not
    # yet timed, at the overall ratio (12.5 s / 13 s), not at the other methods' (3.5 s / 2 s, which gives 18 s)
    assert c.eta() == f"eta {16 + 12.5 / 13:.0f} s" == "eta 17 s"


def test_a_group_member_prints_its_share_of_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four references trained together finish at once: each line gives its share and the group's wall, where
    before the first member showed the whole group's time and the others 0.0 s."""
    import io
    from types import SimpleNamespace

    from harness import progress as pg

    monkeypatch.setattr(pg, "stage_estimate", lambda kind, cfg: SimpleNamespace(seconds=1.0))
    clock = [0.0]
    monkeypatch.setattr(pg.time, "time", lambda: clock[0])
    nodes = {f"r{i}": SimpleNamespace(key=f"r{i}", kind="reference",
                                      cfg=SimpleNamespace(model="hqnn-l1", index=i, seed=0, train_shots=None))
             for i in range(4)}
    out = io.StringIO()
    p = pg.PlainProgress(out)
    p.start("g", 0, 0, SimpleNamespace(stages=nodes, cells=[], dependents=lambda: {k: [] for k in nodes}))
    for n in nodes.values():
        p.stage_started(n, {"pid": 1})
    clock[0] += 80.0
    for n in nodes.values():
        p.stage_finished(n, "done", {"wall": 20.0, "group": 4})
    done = [ln for ln in out.getvalue().splitlines() if "] done" in ln]
    assert len(done) == 4 and all("in 20 s (its share: 4 trained together in 1m20s)" in ln for ln in done), done
