"""Result store and stage identity, without Ray: atomic files, stable schemas, DuckDB views, URIs, keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.grid_spec import load_grid
from harness.identity import build_plan, cell_id, stage_keys
from harness.store import ResultStore, connect_duckdb, examples_arrow

GRIDS = Path(__file__).resolve().parent.parent / "grids"
EXAMPLES = pd.DataFrame({"split": ["train_forget", "test"], "sample_index": [3, 7], "label": [4, 1],
                         "prediction": [4, 2], "loss": [0.1, 2.0], "attack_score": [0.9, 0.2]})


def _row(method: str, eval_shots: int | None, **extra) -> dict:
    return {"model": "hqnn-l1", "forget": "class:4", "method": method, "train_shots": None,
            "unlearn_shots": None, "eval_shots": eval_shots, "seed": 0, "backend": "torch", **extra}


def test_rows_of_any_shape_read_back_as_one_typed_table(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write_cell("g", "a", {**_row("none", None), "status": "ok", "mia_success": 0.9,
                                "circuit_executions": 12.0, "unlearn_steps": 5.0}, EXAMPLES)
    store.write_cell("g", "b", {**_row("ga", 16), "status": "failed", "error": "boom"}, None)
    store.write_cell("h", "c", {**_row("ssd", 1024), "status": "ok", "mia_success": 0.1,
                                "job_ids": ["j1", "j2"]}, EXAMPLES)
    con = connect_duckdb(store)
    df = con.execute("select * from cells order by cell_id").df()
    assert list(df.cell_id) == ["a", "b", "c"] and list(df.grid) == ["g", "g", "h"]
    assert pd.isna(df.eval_shots[0]) and list(df.eval_shots[1:]) == [16, 1024]
    assert df.circuit_executions[0] == 12 and pd.isna(df.mia_success[1]) and df.error[1] == "boom"
    assert df.unlearn_steps[0] == 5.0 and pd.isna(df.unlearn_steps[2]) and df.job_ids[2] == '["j1", "j2"]'
    types = dict(con.execute("select column_name, column_type from (describe cells)").fetchall())
    assert types["eval_shots"] == "BIGINT" and types["mia_success"] == "DOUBLE" and types["seed"] == "BIGINT"
    assert types["finished_at"].startswith("TIMESTAMP")
    ex = con.execute("select cell_id, split, sample_index from examples order by 1, 3").fetchall()
    assert ex == [("a", "train_forget", 3), ("a", "test", 7), ("c", "train_forget", 3), ("c", "test", 7)]
    assert (tmp_path / "cells" / "grid=g" / "a.parquet").exists()
    assert (tmp_path / "examples" / "grid=h" / "c.parquet").exists()
    assert store.grids() == ["g", "h"] and store.cell_statuses("g") == {"a": "ok", "b": "failed"}


def test_unknown_values_are_null_whether_written_now_or_as_nan_before(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    nan = float("nan")
    store.write_cell("g", "a", {**_row("none", None), "status": "ok", "mia_auc": 0.7, "mia_tpr_at_01pct_fpr": nan,
                                "unlearn_steps": nan}, EXAMPLES)
    assert pq.read_table(next((tmp_path / "cells").rglob("*.parquet"))).column("mia_tpr_at_01pct_fpr").null_count == 1
    old = tmp_path / "cells" / "grid=g" / "old.parquet"  # a file from before: NaN stored for unknown
    pq.write_table(pa.Table.from_pylist([{**_row("ga", None), "grid": "g", "cell_id": "b", "status": "ok",
                                          "mia_auc": 0.6, "mia_tpr_at_01pct_fpr": nan, "unlearn_steps": nan}]), old)
    con = connect_duckdb(store)
    got = con.execute("select count(*), count(mia_tpr_at_01pct_fpr), count(unlearn_steps), count(mia_auc), "
                      "count(*) filter (where mia_tpr_at_01pct_fpr is null) from cells").fetchone()
    assert got == (2, 0, 0, 2, 2)


def test_counts_read_as_integers(tmp_path: Path) -> None:
    """Steps and circuit counts arrive from the stages as floats; the view reads them as BIGINT (flags as BOOLEAN),
    NULL kept."""
    store = ResultStore(str(tmp_path))
    store.write_cell("g", "a", {**_row("ga", None), "status": "ok", "relearn_steps": 3.0, "unlearn_steps": 181.0,
                                "unlearn_reached_target": 1.0}, EXAMPLES)
    store.write_cell("g", "b", {**_row("rga", None), "status": "ok", "relearn_steps": float("nan"),
                                "unlearn_steps": 42.0, "unlearn_reached_target": 0.0}, EXAMPLES)
    store.write_cell("g", "c", {**_row("none", None), "status": "ok", "unlearn_reached_target": float("nan")}, EXAMPLES)
    con = connect_duckdb(store)
    types = dict(con.execute("select column_name, column_type from (describe cells)").fetchall())
    assert types["relearn_steps"] == types["unlearn_steps"] == "BIGINT" and types["mia_auc"] == "DOUBLE"
    assert con.execute("select sum(unlearn_steps), count(relearn_steps), max(relearn_steps) from cells").fetchone() == (223, 1, 3)
    assert types["unlearn_reached_target"] == "BOOLEAN"  # a flag, not a 0/1 number
    assert con.execute("select cell_id, unlearn_reached_target from cells order by 1").fetchall() == \
        [("a", True), ("b", False), ("c", None)]


def test_rewriting_a_cell_replaces_it(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write_cell("g", "a", {**_row("ga", 16), "status": "failed", "error": "x"}, None)
    store.write_cell("g", "a", {**_row("ga", 16), "status": "ok"}, EXAMPLES)
    con = connect_duckdb(store)
    assert con.execute("select count(*), any_value(status) from cells").fetchone() == (1, "ok")
    assert con.execute("select count(*) from examples").fetchone() == (2,)


def test_interrupted_write_leaves_old_file_and_no_visible_temp(tmp_path: Path, monkeypatch) -> None:
    store = ResultStore(str(tmp_path))
    store.write_cell("g", "a", {**_row("none", None), "status": "ok", "mia_success": 0.5}, EXAMPLES)

    def crash(src, dst):  # the process dies between writing the temp file and publishing it
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_cell("g", "a", {**_row("none", None), "status": "ok", "mia_success": 0.7}, EXAMPLES)
    monkeypatch.undo()
    assert connect_duckdb(store).execute("select mia_success from cells").fetchall() == [(0.5,)]
    # a SIGKILL leaves the temp file behind: readers ignore it and the next run removes it
    (tmp_path / "cells" / "grid=g" / ".tmp-dead").write_bytes(b"PAR1 half a file")
    assert connect_duckdb(store).execute("select count(*) from cells").fetchone() == (1,)
    assert store.cell_statuses("g") == {"a": "ok"}
    assert store.clean_temp() == 1 and not (tmp_path / "cells" / "grid=g" / ".tmp-dead").exists()


def test_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    """A non-local pyarrow filesystem (the in-memory mock one) goes through the same paths as S3/GCS."""
    store = ResultStore("mock:///results")
    assert not store.local
    store.write_cell("g", "a", {**_row("none", None), "status": "ok", "mia_success": 0.25}, EXAMPLES)
    store.write_artifact("k1", b"bytes")
    assert store.has_artifact("k1") and store.read_artifact("k1") == b"bytes" and not store.has_artifact("k2")
    con = connect_duckdb(store)
    assert con.execute("select cell_id, mia_success from cells").fetchall() == [("a", 0.25)]
    assert con.execute("select count(*) from examples").fetchone() == (2,)
    local = ResultStore(f"file://{tmp_path}")  # a local URI is the plain local store
    assert local.local and local.base == str(tmp_path)


def test_stage_identity_shares_work_and_tracks_code() -> None:
    from workloads.stages import stage_specs

    spec = load_grid(GRIDS / "smoke.yaml")
    cells = spec.cells()
    plan = build_plan("smoke", cells, stage_specs, "v1")
    counts = {k: plan.count(k) for k in ("train", "reference", "unlearn", "attack", "evaluate")}
    assert counts == {"train": 1, "reference": 4, "unlearn": 6, "attack": 3, "evaluate": 18}
    k1 = stage_keys(stage_specs(cells[0]), "v1")
    k2 = stage_keys(stage_specs(cells[0]), "v2")
    assert all(k1[s] != k2[s] for s in k1)  # new code, new keys: no stale artifact is reused
    assert cell_id("smoke", cells[0]) == cell_id("smoke", spec.cells()[0]) != cell_id("other", cells[0])
    assert len({cell_id("smoke", c) for c in cells}) == 18
    # paper.yaml: originals are per (model, seed); retrain depends on the forget set
    paper = build_plan("paper", load_grid(GRIDS / "paper.yaml").cells(), stage_specs, "v1")
    # a shared attack per (original, eval shots) (the held-out attack is fit in evaluate, on the evaluated
    # model); 4 reference models per original, shared by all its cells; one retrain replica per retrain
    # (model, forget set, seed), shared by its eval shots
    originals = 2 * 5  # models x seeds
    assert paper.count("train") == originals and paper.count("attack") == originals * 5
    assert paper.count("reference") == originals * 4 and paper.count("replica") == originals * 3
    shared = [s for s in paper.stages.values() if s.kind == "attack" and s.cfg.attack_scope == "shared"]
    assert len(shared) == originals * 5 and all(len(s.cells) == 3 * 7 for s in shared)  # every forget set and method


def _batch(store: ResultStore, grid: str, ids: list[str], status: str = "ok", seed: int = 0) -> None:
    rows = [{**_row("ga", 16, seed=seed), "cell_id": c, "status": status, "mia_success": 0.5} for c in ids]
    store.write_batch(grid, rows, [None if status != "ok" else examples_arrow(EXAMPLES) for _ in ids])


def _counts(store: ResultStore) -> tuple[int, int, int]:
    con = connect_duckdb(store)
    n, d = con.execute("select count(*), count(distinct cell_id) from cells").fetchone()
    return n, d, con.execute("select count(*) from examples").fetchone()[0]


def test_compaction_folds_pending_files_and_keeps_the_latest_row(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _batch(store, "g", [f"c{i:03d}" for i in range(100)])
    _batch(store, "g", ["x1", "x2"], status="failed")
    store.write_cell("g", "solo", {**_row("none", None), "status": "ok"}, EXAMPLES)
    assert _counts(store) == (103, 103, 2 * 101)
    info = store.compact("g")
    assert info["absorbed"] == 3 and info["cells"] == 103
    assert not list((tmp_path / "cells" / "grid=g").glob("*.parquet"))  # pending files are gone
    assert not list((tmp_path / "examples" / "grid=g").glob("*.parquet"))
    assert _counts(store) == (103, 103, 2 * 101)
    # a re-run stores x1 again as ok: the newer row wins, with its examples, before and after compaction
    _batch(store, "g", ["x1"])
    assert store.cell_statuses("g")["x1"] == "ok" and _counts(store) == (103, 103, 2 * 102)
    store.compact("g")
    assert store.cell_statuses("g")["x1"] == "ok" and _counts(store) == (103, 103, 2 * 102)
    gens = [p for p in (tmp_path / "compacted" / "grid=g").iterdir() if p.is_dir()]
    assert len(gens) == 2  # the current generation and the one before it (for readers that opened it)
    assert store.compact("g")["absorbed"] == 0  # nothing pending: nothing written
    cells = pq.read_table(next(p for p in (tmp_path / "compacted" / "grid=g").rglob("cells-*.parquet")
                               if json.loads((tmp_path / "compacted" / "grid=g" / "current.json").read_text())
                               ["generation"] in str(p)))
    assert cells.column("cell_id").to_pylist() == sorted(cells.column("cell_id").to_pylist(),
                                                          key=lambda c: (c == "solo", c))  # by the axes: ga < none


def test_reader_never_sees_a_row_twice_around_the_swap(tmp_path: Path, monkeypatch) -> None:
    store = ResultStore(str(tmp_path))
    _batch(store, "g", ["a", "b"])
    _batch(store, "g", ["c"])

    def die(*a, **k):  # the compacting process dies right after the swap, before deleting absorbed files
        raise KeyboardInterrupt

    real = ResultStore._delete_absorbed
    calls = []

    def second_call_dies(self, grid, ptr):
        calls.append(ptr)
        if len(calls) == 2:
            die()
        return real(self, grid, ptr)

    monkeypatch.setattr(ResultStore, "_delete_absorbed", second_call_dies)
    with pytest.raises(KeyboardInterrupt):
        store.compact("g")
    monkeypatch.undo()
    assert len(list((tmp_path / "cells" / "grid=g").glob("*.parquet"))) == 2  # still there, but absorbed
    assert _counts(store) == (3, 3, 6) and set(store.cell_statuses("g")) == {"a", "b", "c"}
    store.compact("g")  # the next compaction finishes the deletes first
    assert not list((tmp_path / "cells" / "grid=g").glob("*.parquet")) and _counts(store) == (3, 3, 6)


def test_compaction_on_a_pyarrow_filesystem_uri() -> None:
    store = ResultStore("mock:///results")
    _batch(store, "g", [f"c{i}" for i in range(10)])
    store.write_cell("g", "solo", {**_row("none", None), "status": "failed", "error": "x"}, None)
    assert _counts(store) == (11, 11, 20)
    assert store.compact("g")["cells"] == 11
    assert _counts(store) == (11, 11, 20) and store.grid_files("g").pending_cells == ()
    assert store.grids() == ["g"] and len(store.cell_statuses("g")) == 11
