"""Remote stores end to end: `qmu run`, `status`, `query`, `compact` and `report` against s3:// on a local
S3-compatible server (moto's server mode on 127.0.0.1; no network beyond localhost)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import write_real_grid

pytestmark = pytest.mark.usefixtures("ray_local")
runner = CliRunner()


def qmu(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_root() -> Iterator[str]:
    """A bucket on a moto server in this process; the URI that points pyarrow's S3 client at it."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        mp.setenv(k, v)
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1").create_bucket(
            Bucket="qmu-test")
        yield f"s3://qmu-test/results?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()
        mp.undo()


@pytest.mark.timeout(300)
def test_run_status_query_compact_report_on_s3(tmp_path: Path, s3_root: str) -> None:
    grid = write_real_grid(tmp_path / "g.yaml", name="remote", methods="none, ga", eval_shots="exact")
    res = qmu("run", str(grid), "--results", s3_root, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "2 cells done, 0 failed" in res.output
    assert not (tmp_path / "results").exists() and not Path("results/cells/grid=remote").exists()

    def status() -> list[str]:
        out = qmu("status", "--results", s3_root)
        assert out.exit_code == 0, out.output
        line = next(ln for ln in out.output.splitlines() if "remote" in ln)
        return [c.strip() for c in line.split("│")[1:-1]]

    def query(sql: str) -> list[dict]:
        out = qmu("query", sql, "--results", s3_root, "--format", "json")
        assert out.exit_code == 0, out.output
        return json.loads(out.output)

    cells_q = "select cell_id, method, status, mia_success from cells order by cell_id"
    examples_q = ("select count(*) n, count(distinct cell_id || split || sample_index) d, "
         "count(*) filter (where split <> 'population') own from examples")
    assert status() == ["remote", "2", "2", "0", "0", "0"]
    before = query(cells_q)
    assert len(before) == 2 and {r["status"] for r in before} == {"ok"} and all(r["mia_success"] for r in before)
    ex = query(examples_q)[0]
    assert ex["n"] == ex["d"] and ex["own"] == 2 * 300

    out = qmu("compact", "--results", s3_root)
    assert out.exit_code == 0 and "remote: 2 cells compacted" in out.output, out.output
    assert query(cells_q) == before and query(examples_q)[0] == ex and status() == ["remote", "2", "2", "0", "0", "0"]
    # a re-run finds every cell stored (in the compacted files) and runs nothing
    again = qmu("run", str(grid), "--results", s3_root)
    assert again.exit_code == 0 and "nothing to do: all 2 cells are stored" in again.output, again.output

    out_dir = tmp_path / "report"
    rep = qmu("report", "--results", s3_root, "--out", str(out_dir))
    assert rep.exit_code == 0, rep.output
    md = (out_dir / "report.md").read_text()
    assert "remote" in md and "No results" not in md
