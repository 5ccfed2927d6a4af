"""The result store (DESIGN.md section 8): one Parquet file per cell, artifacts by stage key.

Layout under the results root (a local path or any pyarrow filesystem URI such as s3://bucket/qmu):

    cells/grid=NAME/<cell_id>.parquet      one row; written last, so it is the cell's commit marker
    examples/grid=NAME/<cell_id>.parquet   per-example rows of that cell
    artifacts/<stage_key>.safetensors      stage outputs (weights), never unpickled
    manifests/grid=NAME.json               the cell ids of the grid's latest run, for `qmu status`

Only the driver writes (single writer). Local writes go to a hidden temp file in the same directory, are
fsynced, then renamed over the target, so a SIGKILL at any moment leaves either the old file or the new one.
Object stores publish an object only when its upload completes, so there the write is direct.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Contract columns with fixed types, so files written by failed and ok cells, with or without extras,
# always read back as one table (DESIGN.md section 8). Extra columns keep their inferred types.
CELL_SCHEMA = pa.schema([
    ("cell_id", pa.string()), ("grid", pa.string()),
    ("model", pa.string()), ("forget", pa.string()), ("method", pa.string()),
    ("train_shots", pa.int64()), ("unlearn_shots", pa.int64()), ("eval_shots", pa.int64()),
    ("seed", pa.int64()), ("backend", pa.string()),
    ("status", pa.string()), ("error", pa.string()),
    ("mia_success", pa.float64()), ("mia_success_lo", pa.float64()), ("mia_success_hi", pa.float64()),
    ("mia_auc", pa.float64()), ("mia_tpr_at_1pct_fpr", pa.float64()), ("mia_tpr_at_01pct_fpr", pa.float64()),
    ("acc_train_retain", pa.float64()), ("acc_train_forget", pa.float64()),
    ("acc_test_retain", pa.float64()), ("acc_test_forget", pa.float64()),
    ("train_seconds", pa.float64()), ("unlearn_seconds", pa.float64()), ("eval_seconds", pa.float64()),
    ("circuit_executions", pa.int64()), ("shots_total", pa.int64()), ("qpu_seconds", pa.float64()),
    ("code_version", pa.string()), ("host", pa.string()), ("finished_at", pa.timestamp("us", tz="UTC")),
])
EXAMPLE_SCHEMA = pa.schema([
    ("cell_id", pa.string()), ("split", pa.string()), ("sample_index", pa.int64()), ("label", pa.int64()),
    ("prediction", pa.int64()), ("loss", pa.float64()), ("attack_score", pa.float64()),
])
STATUSES = ("ok", "failed", "budget_skipped")
TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, published files should follow the umask


def open_fs(root: str) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, base path, is_local) for a local path or a pyarrow filesystem URI."""
    if "://" in root:
        fs, base = pafs.FileSystem.from_uri(root)
        return fs, base.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)
    return pafs.LocalFileSystem(), os.path.abspath(root), True


def _arrow_value(v: Any) -> Any:
    """numpy scalars -> Python, so pyarrow infers stable types."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def cell_table(row: dict[str, Any]) -> pa.Table:
    """One-row table: contract columns cast to CELL_SCHEMA, extras appended in sorted order."""
    arrays, fields = [], []
    for f in CELL_SCHEMA:
        v = _arrow_value(row.get(f.name))
        if v is not None and pa.types.is_integer(f.type):
            v = int(round(float(v)))
        arrays.append(pa.array([v], type=f.type))
        fields.append(f)
    for name in sorted(set(row) - set(CELL_SCHEMA.names)):
        v = _arrow_value(row[name])
        if isinstance(v, (dict, list, tuple)):
            v = json.dumps(v, sort_keys=True, default=str)  # nested extras as JSON text, one type per column
        arr = pa.array([v])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def examples_table(cell_id: str, df: pd.DataFrame | None) -> pa.Table:
    if df is None or len(df) == 0:
        return EXAMPLE_SCHEMA.empty_table()
    df = df.assign(cell_id=cell_id)
    cols = [c for c in EXAMPLE_SCHEMA.names if c in df] + [c for c in df.columns if c not in EXAMPLE_SCHEMA.names]
    t = pa.Table.from_pandas(df[cols], preserve_index=False)
    return t.cast(pa.schema([EXAMPLE_SCHEMA.field(c) if c in EXAMPLE_SCHEMA.names else t.schema.field(c)
                             for c in t.column_names]))


def _parquet_bytes(t: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(t, buf)
    return buf.getvalue().to_pybytes()


class ResultStore:
    """Reads and (from the driver only) writes the results root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base, self.local = open_fs(root)

    # paths ---------------------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def cell_path(self, grid: str, cid: str) -> str:
        return self._p("cells", f"grid={grid}", f"{cid}.parquet")

    def examples_path(self, grid: str, cid: str) -> str:
        return self._p("examples", f"grid={grid}", f"{cid}.parquet")

    def artifact_path(self, key: str) -> str:
        return self._p("artifacts", f"{key}.safetensors")

    def manifest_path(self, grid: str) -> str:
        return self._p("manifests", f"grid={grid}.json")

    # writing -------------------------------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        """Atomic publish of `data` at `path` (see module docstring)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def write_artifact(self, key: str, blob: bytes) -> None:
        self._write(self.artifact_path(key), blob)

    def write_cell(self, grid: str, cid: str, row: dict[str, Any], examples: pd.DataFrame | None) -> None:
        """Examples first, then the cell row: a cell exists only once both are complete."""
        row = {**row, "cell_id": cid, "grid": grid}
        row.setdefault("finished_at", datetime.now(timezone.utc))
        self._write(self.examples_path(grid, cid), _parquet_bytes(examples_table(cid, examples)))
        self._write(self.cell_path(grid, cid), _parquet_bytes(cell_table(row)))

    def write_manifest(self, grid: str, info: dict[str, Any]) -> None:
        self._write(self.manifest_path(grid), json.dumps(info, sort_keys=True, indent=1).encode())

    def clean_temp(self) -> int:
        """Remove temp files a killed driver left behind (readers never see them: hidden, no .parquet)."""
        if not self.local:
            return 0
        n = 0
        for top in ("cells", "examples", "artifacts", "manifests"):
            for dirpath, _, files in os.walk(self._p(top)):
                for name in files:
                    if name.startswith(TMP_PREFIX):
                        os.unlink(os.path.join(dirpath, name))
                        n += 1
        return n

    # reading -------------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def has_artifact(self, key: str) -> bool:
        return self.exists(self.artifact_path(key))

    def read_artifact(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.artifact_path(key)) as f:
            return f.read()

    def artifact_metadata(self, key: str) -> dict[str, str]:
        """The safetensors header metadata of an artifact, reading only the header."""
        with self.fs.open_input_file(self.artifact_path(key)) as f:
            n = int.from_bytes(f.read(8), "little")
            return json.loads(f.read(n)).get("__metadata__", {})

    def _files(self, top: str, grid: str | None = None, suffix: str = ".parquet") -> list[str]:
        base = self._p(top, f"grid={grid}") if grid else self._p(top)
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        return sorted(i.path for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                      and not i.base_name.startswith(TMP_PREFIX))

    def grids(self) -> list[str]:
        names = {p.rsplit("/", 2)[-2].removeprefix("grid=") for p in self._files("cells")}
        names |= {p.rsplit("/", 1)[-1].removeprefix("grid=").removesuffix(".json")
                  for p in self._files("manifests", suffix=".json")}
        return sorted(names)

    def cell_statuses(self, grid: str) -> dict[str, str]:
        """cell_id -> status of every stored cell of `grid` (unreadable files count as absent)."""
        out = {}
        for path in self._files("cells", grid):
            try:
                with self.fs.open_input_file(path) as f:
                    t = pq.read_table(f, columns=["cell_id", "status"])
            except (OSError, pa.ArrowInvalid):
                continue
            for cid, st in zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()):
                out[cid] = st
        return out

    def manifest(self, grid: str) -> dict[str, Any] | None:
        path = self.manifest_path(grid)
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def read_table(self, top: str) -> pa.Table:
        """All files of `cells` or `examples` as one table (schemas unified by name)."""
        schema = CELL_SCHEMA if top == "cells" else EXAMPLE_SCHEMA
        tables = []
        for path in self._files(top):
            with self.fs.open_input_file(path) as f:
                tables.append(pq.read_table(f))
        if not tables:
            return schema.empty_table()
        return pa.concat_tables(tables, promote_options="permissive")

    def local_glob(self, top: str) -> str | None:
        """A glob DuckDB can scan lazily, when the store is local and has files there."""
        if not self.local or not self._files(top):
            return None
        return self._p(top, "*", "*.parquet")


def header_metadata(blob: bytes) -> dict[str, str]:
    """The metadata of a safetensors blob (JSON header after its 8-byte length), tensors untouched."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]).get("__metadata__", {})


def connect_duckdb(store: ResultStore):
    """An in-memory DuckDB with views `cells` and `examples` over the store.

    A local store is scanned lazily by glob (schemas unified by column name); any other filesystem is read
    through pyarrow. `examples` keeps only rows of stored cells, so a driver killed between writing a cell's
    examples and its row never shows half a cell.
    """
    import duckdb

    con = duckdb.connect()
    for top in ("cells", "examples"):
        glob = store.local_glob(top)
        if glob is not None:
            src = f"read_parquet('{_sql_str(glob)}', union_by_name = true, hive_partitioning = false)"
        else:
            con.register(f"_{top}_arrow", store.read_table(top))
            src = f"_{top}_arrow"
        where = " WHERE cell_id IN (SELECT cell_id FROM cells)" if top == "examples" else ""
        con.execute(f"CREATE VIEW {top} AS SELECT * FROM {src}{where}")
    return con


def _sql_str(s: str) -> str:
    return s.replace("'", "''")
