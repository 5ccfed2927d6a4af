"""`qmu query` cannot write and cannot read outside the store. The writes and the `.tmp` reads below ran on the
old sandbox (a statement-type check, and the root plus DuckDB's temp directory readable and writable)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app


def _store(root: Path) -> None:
    from harness.store import ResultStore

    s = ResultStore(str(root))
    s.write_cell("g", "c1", {"model": "m", "forget": "class:4", "method": "none", "seed": 0, "backend": "torch",
                             "status": "ok", "mia_success": 0.5}, None)
    s.write_manifest("g", {"grid": "g", "cells": ["c1"]})


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def _query(sql: str, root: Path, *extra: str):
    return CliRunner().invoke(app, ["query", sql, "--results", str(root), *extra], prog_name="qmu")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _store(tmp_path / "r")
    return tmp_path / "r"


@pytest.mark.parametrize("sql,expect", [
    ("EXPLAIN ANALYZE COPY (select 42 as x) TO '{cells}/evil.parquet'", "EXPLAIN ANALYZE runs the statement"),
    ("explain /* c */ analyze COPY (select 42 as x) TO '{cells}/evil.parquet'", "EXPLAIN ANALYZE runs"),
    ("EXPLAIN (ANALYZE) COPY (select 42 as x) TO '{cells}/evil.parquet'", "EXPLAIN's options are not supported"),
    ("WITH c AS (COPY (select 42 as x) TO '{cells}/evil.parquet') SELECT 1", "COPY inside a query is not allowed"),
    ("select * from (WITH c AS (COPY (select 1 as x) TO '{cells}/evil.parquet') SELECT 1)", "COPY inside a query"),
    ("EXPLAIN ANALYZE COPY (select 42 as x) TO '.tmp/evil.csv'", "EXPLAIN ANALYZE runs"),
])
def test_a_write_hidden_in_a_select_or_explain_exits_2_and_writes_nothing(root: Path, sql: str, expect: str) -> None:
    cells = root / "cells" / "grid=g"
    before = _tree(root.parent)
    res = _query(sql.format(cells=cells), root)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: query: ") and expect in res.output, res.output
    assert _tree(root.parent) == before
    rows = json.loads(_query("select cell_id from cells", root, "-f", "json").output)
    assert rows == [{"cell_id": "c1"}]  # no row with a NULL cell_id


def test_explain_without_analyze_and_ctes_still_run(root: Path) -> None:
    res = _query("EXPLAIN select count(*) from cells", root)
    assert res.exit_code == 0 and "physical_plan" in res.output, res.output
    res = _query("with t as (select cell_id from cells) select count(*) n from t union all select 2", root, "-f", "csv")
    assert res.exit_code == 0 and res.output.splitlines() == ["n", "1", "2"], res.output
    res = _query("describe examples", root, "-f", "json")
    assert res.exit_code == 0 and "sample_index" in res.output, res.output


def test_the_working_directory_tmp_is_neither_read_nor_written(root: Path) -> None:
    """DuckDB adds its temp directory (default `.tmp` under the working directory) to the readable paths."""
    tmp = root.parent / ".tmp"
    tmp.mkdir()
    (tmp / "secret.txt").write_text("s3cr3t")
    for sql in ("select * from read_text('.tmp/secret.txt')", f"select * from read_text('{tmp}/secret.txt')",
                "select * from glob('.tmp/*')"):
        res = _query(sql, root)
        assert res.exit_code == 2 and "Permission Error" in res.output and "s3cr3t" not in res.output, res.output
    assert sorted(p.name for p in tmp.iterdir()) == ["secret.txt"]


def test_read_text_and_glob_outside_the_root_through_a_link_in_it(root: Path) -> None:
    """A link inside the root to a folder outside it: the path starts with the root, the file does not (DuckDB
    refused these on the old sandbox too; kept so that a looser connection cannot pass)."""
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cr3t")
    os.symlink(outside, root / "link")
    for sql in (f"select * from read_text('{root}/link/secret.txt')", f"select * from glob('{root}/link/*')",
                f"select * from read_csv('{root}/link/secret.txt')", "select * from glob('/etc/*')",
                "select * from read_text('/etc/hostname')"):
        res = _query(sql, root)
        assert res.exit_code == 2 and "Permission Error" in res.output and "s3cr3t" not in res.output, res.output


def test_the_connection_itself_cannot_write_even_past_the_statement_check(root: Path) -> None:
    """The second guard alone: statements the check refuses, run straight on the product's connection."""
    import duckdb

    from harness.sql import sandbox
    from harness.store import ResultStore

    with sandbox(ResultStore(str(root))) as con:
        for sql in (f"COPY (select 1 as x) TO '{root}/cells/grid=g/evil.parquet'",
                    f"COPY (select 1 as x) TO '{root.parent}/evil.csv'", f"ATTACH '{root}/other.db' AS other"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    assert not (root / "cells" / "grid=g" / "evil.parquet").exists() and not (root.parent / "evil.csv").exists()
    assert not (root / "other.db").exists()
