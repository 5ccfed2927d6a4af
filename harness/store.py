"""The result store (docs/results.md): crash-safe pending Parquet files, compacted per grid, and artifacts by
stage key.

Layout under the results root (a local path or any pyarrow filesystem URI such as s3://bucket/qmu):

    cells/grid=NAME/<name>.parquet          pending rows: one cell (<cell_id>.parquet) or a driver batch
    examples/grid=NAME/<name>.parquet       per-example rows of the same cells, same file name
    compacted/grid=NAME/current.json        the grid's compacted generation (written last: the swap)
    compacted/grid=NAME/<gen>/*.parquet     cells and examples of that generation, sorted by the grid axes
    artifacts/<stage_key>.safetensors       stage outputs (weights), never unpickled
    manifests/grid=NAME.json                the cell ids of the grid's latest run, for `qmu status`

Only the driver writes (single writer). A pending cells file is a commit marker: its examples file is written
before it. Local writes go to a hidden temp file in the same directory, are synced, then renamed over the
target, so a SIGKILL at any moment leaves either the old file or the new one. Object stores publish an object
only when its upload completes, so there the write is direct.

Readers see every stored cell once: the compacted generation named by `current.json` plus the pending files it
did not absorb; a cell stored more than once (a re-run of a failed cell) reads as its latest row, and its
examples come from the same write as that row. See `compact` for the swap.
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # only in annotations: `qmu status` and a finished re-run start without pandas
    import pandas as pd

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Contract columns with fixed types, so files written by failed and ok cells, with or without extras,
# always read back as one table (docs/results.md). Extra columns keep their inferred types.
CELL_SCHEMA = pa.schema([
    ("cell_id", pa.string()), ("grid", pa.string()),
    ("model", pa.string()), ("forget", pa.string()), ("method", pa.string()),
    ("train_shots", pa.int64()), ("unlearn_shots", pa.int64()), ("eval_shots", pa.int64()),
    ("seed", pa.int64()), ("backend", pa.string()),
    ("status", pa.string()), ("error", pa.string()),
    ("mia_success", pa.float64()), ("mia_success_lo", pa.float64()), ("mia_success_hi", pa.float64()),
    ("mia_recall_heldout", pa.float64()), ("mia_nonmember_flag_rate", pa.float64()),
    ("mia_advantage", pa.float64()), ("mia_advantage_lo", pa.float64()), ("mia_advantage_hi", pa.float64()),
    ("mia_auc", pa.float64()), ("mia_tpr_at_1pct_fpr", pa.float64()), ("mia_tpr_at_01pct_fpr", pa.float64()),
    ("mia_fpr_floor", pa.float64()), ("n_nonmembers_scored", pa.int64()),
    ("loss_auc", pa.float64()), ("loss_tpr_at_1pct_fpr", pa.float64()), ("loss_tpr_at_01pct_fpr", pa.float64()),
    ("rmia_auc", pa.float64()), ("rmia_tpr_at_1pct_fpr", pa.float64()), ("rmia_tpr_at_01pct_fpr", pa.float64()),
    ("lira_auc", pa.float64()), ("lira_tpr_at_1pct_fpr", pa.float64()), ("lira_tpr_at_01pct_fpr", pa.float64()),
    ("acc_train_retain", pa.float64()), ("acc_train_forget", pa.float64()),
    ("acc_test_retain", pa.float64()), ("acc_test_forget", pa.float64()),
    ("train_seconds", pa.float64()), ("unlearn_seconds", pa.float64()), ("eval_seconds", pa.float64()),
    ("circuit_executions", pa.int64()), ("shots_total", pa.int64()), ("qpu_seconds", pa.float64()),
    ("qpu_seconds_reported", pa.bool_()), ("qpu_seconds_error", pa.string()),
    ("code_version", pa.string()), ("host", pa.string()), ("finished_at", pa.timestamp("us", tz="UTC")),
])
EXAMPLE_SCHEMA = pa.schema([
    ("cell_id", pa.string()), ("split", pa.string()), ("sample_index", pa.int64()), ("label", pa.int64()),
    ("prediction", pa.int64()), ("loss", pa.float64()), ("attack_score", pa.float64()),
    *((f"prob_{c}", pa.float64()) for c in range(10)),
])
# Counts that the stages report as floats (extras, not in CELL_SCHEMA): the `cells` view reads them as BIGINT.
COUNT_COLUMNS = ("unlearn_steps", "relearn_steps", "unlearn_circuits", "unlearn_circuits_device",
                 "train_circuits_device", "unlearn_shots_total", "eval_circuits")
FLAG_COLUMNS = ("unlearn_reached_target", "relearn_applicable")  # reported as 0.0/1.0; the view reads them as BOOLEAN
AXES = ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots", "seed", "backend")
TMP_PREFIX = ".tmp-"
CURRENT = "current.json"
STATUSES = ("ok", "failed", "budget_skipped")  # a cell row's `status` (the one list; reports import it)
# DuckDB parallelises a scan by row group and its own writer uses 122,880 rows per group.
ROW_GROUP_ROWS = 122_880
EXAMPLE_FILE_ROWS = 16 * ROW_GROUP_ROWS
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, published files should follow the umask


def open_fs(root: str) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, base path, is_local) for a local path or a pyarrow filesystem URI."""
    if "://" in root:
        if root.startswith("s3://") and "allow_delayed_open" not in root:
            # small objects in one PutObject instead of a three-request multipart upload
            root += ("&" if "?" in root else "?") + "allow_delayed_open=true"
        fs, base = pafs.FileSystem.from_uri(root)
        return fs, base.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)
    return pafs.LocalFileSystem(), os.path.abspath(root), True


def _arrow_value(v: Any) -> Any:
    """numpy scalars -> Python, so pyarrow infers stable types; NaN (an unknown value) -> None (NULL)."""
    v = v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v
    return None if isinstance(v, float) and v != v else v


def _extra_array(values: list[Any]) -> pa.Array:
    """An extra column: nested values as JSON text, one type per column (text when rows disagree)."""
    vals = [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v
            for v in map(_arrow_value, values)]
    try:
        return pa.array(vals)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in vals], type=pa.string())


def cells_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as one table: contract columns cast to CELL_SCHEMA, extras appended in sorted order."""
    arrays, fields = [], []
    for f in CELL_SCHEMA:
        vals = [_arrow_value(r.get(f.name)) for r in rows]
        if pa.types.is_integer(f.type):
            vals = [None if v is None or v != v else int(round(float(v))) for v in vals]
        arrays.append(pa.array(vals, type=f.type))
        fields.append(f)
    for name in sorted(set().union(*rows) - set(CELL_SCHEMA.names)):
        arr = _extra_array([r.get(name) for r in rows])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def cell_table(row: dict[str, Any]) -> pa.Table:
    return cells_table([row])


def examples_arrow(df: pd.DataFrame | pa.Table | None) -> pa.Table | None:
    """A cell's examples with the contract columns typed, without `cell_id` (workers build this in parallel).
    Column by column from numpy: several times faster than `Table.from_pandas` on the small frames of a cell."""
    if df is None or len(df) == 0:
        return None
    if isinstance(df, pa.Table):
        cols = {c: df.column(c) for c in df.column_names}
    else:
        cols = {str(c): df[c].to_numpy() for c in df.columns}
    cols.pop("cell_id", None)
    names = [c for c in EXAMPLE_SCHEMA.names if c in cols] + [c for c in cols if c not in EXAMPLE_SCHEMA.names]
    arrays = []
    for c in names:
        typ = EXAMPLE_SCHEMA.field(c).type if c in EXAMPLE_SCHEMA.names else None
        v = cols[c]
        arrays.append(v.cast(typ) if isinstance(v, (pa.Array, pa.ChunkedArray)) and typ is not None
                      else v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, type=typ, from_pandas=True))
    return pa.Table.from_arrays(arrays, names=names)


def with_cell_id(cell_id: str, t: pa.Table) -> pa.Table:
    return t.add_column(0, pa.field("cell_id", pa.string()), pa.array([cell_id] * len(t), pa.string()))


def examples_table(cell_id: str, df: pd.DataFrame | None) -> pa.Table:
    t = examples_arrow(df)
    return EXAMPLE_SCHEMA.empty_table() if t is None else with_cell_id(cell_id, t)


def _parquet_bytes(t: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(t, buf)
    return buf.getvalue().to_pybytes()


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t is not None]
    return pa.concat_tables(tables, promote_options="permissive") if tables else schema.empty_table()


def _syncfs(path: str) -> None:
    """One sync of the filesystem holding `path` (instead of one fsync per file of a batch)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    except OSError:
        os.sync()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class GridFiles:
    """What a reader of one grid reads: the compacted generation and the pending files it did not absorb.

    `src` tags rows with where they came from, so that a cell's examples are read from the same write as its
    row: a pending file's own path, or `gen:<generation>` for the compacted files."""

    grid: str
    generation: str | None
    compacted_cells: tuple[str, ...]
    compacted_examples: tuple[str, ...]
    pending_cells: tuple[str, ...]
    pending_examples: tuple[str, ...]

    @property
    def gen_src(self) -> str:
        return f"gen:{self.generation}"


class ResultStore:
    """Reads and (from the driver only) writes the results root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base, self.local = open_fs(root)
        self._pool: ThreadPoolExecutor | None = None

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

    def compacted_dir(self, grid: str) -> str:
        return self._p("compacted", f"grid={grid}")

    # writing -------------------------------------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        """Atomic publish of `data` at `path` (see module docstring)."""
        self._write_many([(path, data)])

    def _write_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish files in order, atomically each; locally with one filesystem sync before the renames, so a
        batch costs one sync, not one fsync per file. On an object store the uploads overlap, and a later
        item starts only after every earlier one is published (the cells file is the commit marker)."""
        if not items:
            return
        for parent in {p.rsplit("/", 1)[0] for p, _ in items}:
            self.fs.create_dir(parent, recursive=True)
        if not self.local:
            self._upload(items)
            return
        tmps: list[tuple[str, str]] = []
        try:
            for path, data in items:
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.rsplit("/", 1)[0])
                tmps.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o666 & ~_UMASK)
            _syncfs(tmps[0][0])
            for tmp, path in tmps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in tmps:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            raise

    def _upload(self, items: list[tuple[str, bytes]]) -> None:
        def put(item: tuple[str, bytes]) -> None:
            with self.fs.open_output_stream(item[0]) as out:
                out.write(item[1])

        *body, last = items
        if len(body) > 1:
            self._pool = self._pool or ThreadPoolExecutor(16)
            list(self._pool.map(put, body))
        elif body:
            put(body[0])
        put(last)

    def write_artifact(self, key: str, blob: bytes) -> None:
        self._write(self.artifact_path(key), blob)

    def write_artifacts(self, items: Iterable[tuple[str, bytes]]) -> None:
        self._write_many([(self.artifact_path(k), b) for k, b in items])

    def write_cell(self, grid: str, cid: str, row: dict[str, Any], examples: pd.DataFrame | None) -> None:
        """One cell as its own pending file `<cell_id>.parquet` (examples first: the row commits it)."""
        row = {**row, "cell_id": cid, "grid": grid}
        row.setdefault("finished_at", datetime.now(timezone.utc))
        self._write_many([(self.examples_path(grid, cid), _parquet_bytes(examples_table(cid, examples))),
                          (self.cell_path(grid, cid), _parquet_bytes(cell_table(row)))])

    def write_batch(self, grid: str, rows: list[dict[str, Any]], examples: list[pa.Table | None],
                    artifacts: Iterable[tuple[str, bytes]] = ()) -> str:
        """Many finished cells in one pending file (and the artifacts their stages made), published with one
        sync: artifacts, then examples, then the cells file that commits them. A lone cell keeps the name
        `<cell_id>.parquet`. Returns the file name."""
        name = rows[0]["cell_id"] if len(rows) == 1 else \
            f"b-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:10]}"
        now = datetime.now(timezone.utc)
        rows = [{"finished_at": now, **r, "grid": grid} for r in rows]
        ex = _concat([with_cell_id(r["cell_id"], e) for r, e in zip(rows, examples) if e is not None],
                     EXAMPLE_SCHEMA)
        items = [(self.artifact_path(k), b) for k, b in artifacts]
        items += [(self.examples_path(grid, name), _parquet_bytes(ex)),
                  (self.cell_path(grid, name), _parquet_bytes(cells_table(rows)))]
        self._write_many(items)
        return name

    def write_manifest(self, grid: str, info: dict[str, Any]) -> None:
        self._write(self.manifest_path(grid), json.dumps(info, sort_keys=True).encode())

    def clean_temp(self) -> int:
        """Remove temp files a killed driver left behind (readers never see them: hidden, no .parquet)."""
        if not self.local:
            return 0
        n = 0
        for top in ("cells", "examples", "artifacts", "manifests", "compacted"):
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

    def artifact_keys(self) -> set[str]:
        """Keys of every stored artifact, from one listing (a run checks thousands of keys)."""
        return {p.rsplit("/", 1)[-1].removesuffix(".safetensors")
                for p in self._files("artifacts", suffix=".safetensors")}

    def read_artifact(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.artifact_path(key)) as f:
            return f.read()

    def artifact_metadata(self, key: str) -> dict[str, str]:
        """The safetensors header metadata of an artifact, reading only the header."""
        with self.fs.open_input_file(self.artifact_path(key)) as f:
            n = int.from_bytes(f.read(8), "little")
            return json.loads(f.read(n)).get("__metadata__", {})

    def _infos(self, base: str, suffix: str = ".parquet", recursive: bool = True) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
        return sorted((i for i in self.fs.get_file_info(sel)
                       if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
                       and not i.base_name.startswith(TMP_PREFIX)), key=lambda i: i.path)

    def _files(self, top: str, grid: str | None = None, suffix: str = ".parquet") -> list[str]:
        base = self._p(top, f"grid={grid}") if grid else self._p(top)
        return [i.path for i in self._infos(base, suffix)]

    def grids(self) -> list[str]:
        names = set()
        for top in ("cells", "compacted"):
            sel = pafs.FileSelector(self._p(top), allow_not_found=True)
            names |= {i.base_name.removeprefix("grid=") for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory and i.base_name.startswith("grid=")}
        names |= {p.rsplit("/", 1)[-1].removeprefix("grid=").removesuffix(".json")
                  for p in self._files("manifests", suffix=".json")}
        return sorted(names)

    def _pointer(self, grid: str) -> dict[str, Any] | None:
        path = f"{self.compacted_dir(grid)}/{CURRENT}"
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    @staticmethod
    def _file_id(info: pafs.FileInfo) -> list[Any]:
        """A pending file's identity: a cell's own file may be rewritten under the same name later."""
        return [info.base_name, info.size, info.mtime_ns]

    def grid_files(self, grid: str) -> GridFiles:
        """The files that hold the grid's cells now. Pending files are listed before the pointer is read: a
        compaction that swaps in between has absorbed files this listing still shows, and its pointer names
        them, so nothing is read twice; one that swaps after the pointer was read leaves its old generation
        and deletes absorbed files, which `read_consistent` notices and retries."""
        cinfos = self._infos(self._p("cells", f"grid={grid}"), recursive=False)
        einfos = self._infos(self._p("examples", f"grid={grid}"), recursive=False)
        ptr = self._pointer(grid) or {}
        absorbed = {tuple(x) for x in ptr.get("absorbed", [])}
        pending = [i for i in cinfos if tuple(self._file_id(i)) not in absorbed]
        names = {i.base_name for i in pending}
        gdir = f"{self.compacted_dir(grid)}/{ptr.get('generation')}"
        return GridFiles(grid, ptr.get("generation"),
                         tuple(f"{gdir}/{n}" for n in ptr.get("cells", [])),
                         tuple(f"{gdir}/{n}" for n in ptr.get("examples", [])),
                         tuple(i.path for i in pending),
                         tuple(i.path for i in einfos if i.base_name in names))

    def all_grid_files(self) -> list[GridFiles]:
        return [self.grid_files(g) for g in self.grids()]

    def _read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            return pf.read(columns=cols)

    def _read_all(self, paths: Iterable[str], columns: list[str] | None, src: str | None = None,
                  skip_bad: bool = False) -> list[pa.Table]:
        """Tables of `paths`, read concurrently, each tagged with its `_src` (its own path by default)."""
        paths = list(paths)

        def one(p: str) -> pa.Table | None:
            try:
                t = self._read_parquet(p, columns)
            except (OSError, pa.ArrowInvalid):
                if skip_bad and self.exists(p):
                    return None  # a damaged file counts as absent
                raise
            return t.append_column("_src", _repeated(src or p, len(t)))

        if len(paths) > 8:
            self._pool = self._pool or ThreadPoolExecutor(16)
            out = list(self._pool.map(one, paths))
        else:
            out = [one(p) for p in paths]
        return [t for t in out if t is not None]

    def read_cells(self, grid: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """Every stored cell once (the latest row of each cell id), with `_src`; retried if a compaction
        swapped while reading."""
        want = None if columns is None else list(dict.fromkeys(["cell_id", "grid", "finished_at", *columns]))
        for attempt in range(5):
            files = [self.grid_files(grid)] if grid else self.all_grid_files()
            try:
                tables = []
                for gf in files:
                    tables += self._read_all(gf.compacted_cells, want, gf.gen_src)
                    tables += self._read_all(gf.pending_cells, want, skip_bad=True)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        schema = CELL_SCHEMA if want is None else pa.schema([CELL_SCHEMA.field(c) for c in want
                                                             if c in CELL_SCHEMA.names])
        t = _concat(tables, schema.append(pa.field("_src", pa.string())))
        return _latest(t)

    def cell_statuses(self, grid: str) -> dict[str, str]:
        """cell_id -> status of every stored cell of `grid` (unreadable files count as absent)."""
        t = self.read_cells(grid, ["status"])
        return dict(zip(t.column("cell_id").to_pylist(), t.column("status").to_pylist()))

    def manifest(self, grid: str) -> dict[str, Any] | None:
        path = self.manifest_path(grid)
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def read_table(self, top: str) -> pa.Table:
        """All stored `cells` or `examples` rows as one table, each cell once (schemas unified by name)."""
        cells = self.read_cells()
        if top == "cells":
            return cells.drop_columns(["_src"])
        keep = set(zip(cells.column("cell_id").to_pylist(), cells.column("_src").to_pylist()))
        tables = []
        for gf in self.all_grid_files():
            tables += self._read_all(gf.compacted_examples, None, gf.gen_src)
            tables += self._read_all(gf.pending_examples, None)
        t = _concat(tables, EXAMPLE_SCHEMA.append(pa.field("_src", pa.string())))
        mask = [(c, s) in keep for c, s in zip(t.column("cell_id").to_pylist(), t.column("_src").to_pylist())]
        return t.filter(pa.array(mask, pa.bool_())).drop_columns(["_src"])

    # compaction ----------------------------------------------------------------------------------
    def compact(self, grid: str) -> dict[str, Any]:
        """Fold the grid's pending files and its current generation into a new generation of a few large
        Parquet files sorted by the grid axes, then swap it in by rewriting `current.json` (one atomic write).

        A crash before the swap leaves the old state plus an unreferenced generation (removed by the next
        compaction); after it, the pointer lists the absorbed pending files, so readers skip them until they
        are deleted. The previous generation is kept one round for readers that opened it."""
        old = self._pointer(grid) or {}
        self._delete_absorbed(grid, old)  # left behind by a compaction killed after its swap
        gf = self.grid_files(grid)
        infos = self._infos(self._p("cells", f"grid={grid}"), recursive=False)
        pending_ids = [self._file_id(i) for i in infos if i.path in set(gf.pending_cells)]
        if not pending_ids:
            return {"grid": grid, "generation": gf.generation, "absorbed": 0, "cells": old.get("n_cells", 0)}
        gen = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        gdir = f"{self.compacted_dir(grid)}/{gen}"
        self.fs.create_dir(gdir, recursive=True)
        n_cells, cell_files, ex_files = self._write_generation(gf, gdir)
        ptr = {"grid": grid, "generation": gen, "cells": cell_files, "examples": ex_files,
               "absorbed": pending_ids, "n_cells": n_cells, "previous": gf.generation,
               "written_at": datetime.now(timezone.utc).isoformat()}
        self._write(f"{self.compacted_dir(grid)}/{CURRENT}", json.dumps(ptr, sort_keys=True).encode())
        self._delete_absorbed(grid, ptr)
        self._drop_generations(grid, keep={gen, gf.generation})
        return {"grid": grid, "generation": gen, "absorbed": len(pending_ids), "cells": n_cells}

    def _write_generation(self, gf: GridFiles, gdir: str) -> tuple[int, list[str], list[str]]:
        """Write the deduplicated, sorted cells and examples of `gf` under `gdir`; (cells, file names)."""
        import duckdb

        cells = _sort_cells(self.read_cells(gf.grid))
        cells = cells.append_column("_ord", pa.array(range(cells.num_rows), pa.int64()))
        con = duckdb.connect()
        con.execute("SET threads TO 2")
        con.execute(f"SET temp_directory = '{_sql_str(tempfile.gettempdir())}/qmu-duckdb'")
        con.register("c", cells.select(["cell_id", "_src", "_ord"]))
        out = cells.drop_columns(["_src", "_ord"])
        self._write_parquet(f"{gdir}/cells-00000.parquet", [out], out.schema)
        ex_src = _register_examples(con, self, gf)
        ex_files: list[str] = []
        if ex_src:
            reader = con.sql(f"SELECT e.* EXCLUDE (_src) FROM ({ex_src}) e JOIN c ON c.cell_id = e.cell_id "
                             "AND c._src = e._src ORDER BY c._ord, e.split, e.sample_index"
                             ).to_arrow_reader(ROW_GROUP_ROWS)
            ex_files = self._write_parquet_files(gdir, "examples", reader)
        con.close()
        return out.num_rows, ["cells-00000.parquet"], ex_files

    def _write_parquet(self, path: str, batches: Iterable[pa.Table | pa.RecordBatch], schema: pa.Schema) -> None:
        with self.fs.open_output_stream(path) as out:
            with pq.ParquetWriter(out, schema, compression="zstd") as w:
                for b in batches:
                    w.write(b if isinstance(b, pa.Table) else pa.Table.from_batches([b]),
                            row_group_size=ROW_GROUP_ROWS)
        if self.local:
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    def _write_parquet_files(self, gdir: str, stem: str, reader: pa.RecordBatchReader) -> list[str]:
        """Stream `reader` into files of at most EXAMPLE_FILE_ROWS rows, in row groups of ROW_GROUP_ROWS."""
        names: list[str] = []
        writer, out, rows = None, None, 0
        try:
            for batch in reader:
                if writer is None or rows >= EXAMPLE_FILE_ROWS:
                    if writer is not None:
                        writer.close()
                        out.close()
                    names.append(f"{stem}-{len(names):05d}.parquet")
                    out = self.fs.open_output_stream(f"{gdir}/{names[-1]}")
                    writer, rows = pq.ParquetWriter(out, reader.schema, compression="zstd"), 0
                writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
                out.close()
        if self.local:
            for n in names:
                fd = os.open(f"{gdir}/{n}", os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        return names

    def _delete_absorbed(self, grid: str, ptr: dict[str, Any]) -> None:
        """Delete the pending files a generation absorbed (cells first: a lone examples file is ignored)."""
        absorbed = {tuple(x) for x in ptr.get("absorbed", [])}
        if not absorbed:
            return
        for top in ("cells", "examples"):
            for i in self._infos(self._p(top, f"grid={grid}"), recursive=False):
                cell_info = i if top == "cells" else None
                if top == "cells" and tuple(self._file_id(cell_info)) in absorbed:
                    self.fs.delete_file(i.path)
                elif top == "examples" and i.base_name in {a[0] for a in absorbed}:
                    if not self.exists(self._p("cells", f"grid={grid}", i.base_name)):
                        self.fs.delete_file(i.path)

    def _drop_generations(self, grid: str, keep: set[str | None]) -> None:
        sel = pafs.FileSelector(self.compacted_dir(grid), allow_not_found=True)
        for i in self.fs.get_file_info(sel):
            if i.type == pafs.FileType.Directory and i.base_name not in keep:
                self.fs.delete_dir(i.path)


def _latest(t: pa.Table) -> pa.Table:
    """Each cell id once: its latest row (a later write wins; pending over compacted on a tie)."""
    if t.num_rows == 0:
        return t
    import pyarrow.compute as pc

    keyed = t.append_column("_gen", pc.starts_with(t.column("_src"), "gen:"))
    order = pc.sort_indices(keyed, sort_keys=[("cell_id", "ascending", "at_end"),
                                              ("finished_at", "descending", "at_end"),
                                              ("_gen", "ascending", "at_end"), ("_src", "descending", "at_end")])
    ids = pc.take(t.column("cell_id"), order)
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).combine_chunks()
    # (a null compares as a new id) built without Python scalars, which import pandas: see _repeated
    first = pa.concat_arrays([pc.is_null(pa.nulls(1, pa.bool_())), pc.or_kleene(first, pc.is_null(first))])
    return t.take(pc.filter(order, first))


def _sort_cells(t: pa.Table) -> pa.Table:
    """Cells in grid-axis order (exact shots first), so a scan filtered on an axis reads few row groups."""
    keys = [(a, "ascending", "at_start") for a in (*AXES, "cell_id") if a in t.column_names]
    return t.sort_by(keys) if t.num_rows else t


def _register_examples(con: Any, store: ResultStore, gf: GridFiles) -> str | None:
    """A SELECT over the examples of `gf` with a `_src` column (None when there are none). Local files are
    scanned lazily by DuckDB; remote ones through pyarrow (a dataset for the large compacted files)."""
    parts = []
    tag = gf.grid.replace('"', "")
    if gf.compacted_examples:
        if store.local:
            files = ", ".join(f"'{_sql_str(p)}'" for p in gf.compacted_examples)
            parts.append(f"SELECT *, '{_sql_str(gf.gen_src)}' AS _src FROM read_parquet([{files}], "
                         "union_by_name = true)")
        else:
            import pyarrow.dataset as pads

            ds = pads.dataset(list(gf.compacted_examples), filesystem=store.fs, format="parquet")
            con.register(f"_exc_{tag}", ds)
            parts.append(f"SELECT *, '{_sql_str(gf.gen_src)}' AS _src FROM \"_exc_{tag}\"")
    if gf.pending_examples:
        if store.local:
            files = ", ".join(f"'{_sql_str(p)}'" for p in gf.pending_examples)
            parts.append(f"SELECT * EXCLUDE (filename), replace(filename, '/examples/grid=', '/cells/grid=') AS _src "
                         f"FROM read_parquet([{files}], union_by_name = true, filename = true)")
        else:
            t = _concat(store._read_all(gf.pending_examples, None), EXAMPLE_SCHEMA)
            t = t.set_column(t.schema.get_field_index("_src"), "_src",
                             pa.array([s.replace("/examples/grid=", "/cells/grid=", 1)
                                       for s in t.column("_src").to_pylist()], pa.string()))
            con.register(f"_exp_{tag}", t)
            parts.append(f"SELECT * FROM \"_exp_{tag}\"")
    return " UNION ALL BY NAME ".join(parts) if parts else None


def register_views(con: Any, store: ResultStore, cells: str = "cells", examples: str = "examples") -> tuple[int, bool]:
    """Create views `cells` and `examples` over the store on DuckDB connection `con`: each stored cell once,
    and the examples of exactly those rows. Cells are read once into memory (they are small); examples are
    scanned lazily. Returns (number of cells, whether any examples file exists)."""
    for attempt in range(5):
        try:
            t = store.read_cells()
            files = store.all_grid_files()
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
    con.register(f"_{cells}_arrow", t)
    con.execute(f"CREATE OR REPLACE TEMP VIEW _{cells}_src AS SELECT * FROM \"_{cells}_arrow\"")
    # rows written before NaN was stored as NULL still hold NaN for unknown values: read them as NULL
    floats = [f.name for f in t.schema if pa.types.is_floating(f.type)]
    known = [f"CASE WHEN isnan({_q(c)}) THEN NULL ELSE {_q(c)} END" for c in floats]
    known = [f"CAST({k} AS BIGINT)" if c in COUNT_COLUMNS else f"CAST({k} AS BOOLEAN)" if c in FLAG_COLUMNS else k
             for c, k in zip(floats, known)]
    nulls = f" REPLACE ({', '.join(f'{k} AS {_q(c)}' for c, k in zip(floats, known))})"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {cells} AS SELECT * EXCLUDE (_src){nulls if floats else ''} "
                f"FROM \"_{cells}_arrow\"")
    parts = [p for p in (_register_examples(con, store, gf) for gf in files) if p]
    if parts:
        src = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {examples} AS SELECT e.* EXCLUDE (_src) FROM ({src}) e "
                    f"SEMI JOIN _{cells}_src c ON c.cell_id = e.cell_id AND c._src = e._src")
    else:
        types = ", ".join(f"NULL::{_duck_type(f.type)} AS {f.name}" for f in EXAMPLE_SCHEMA)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {examples} AS SELECT {types} WHERE FALSE")
    return t.num_rows, bool(parts)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_type(t: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}.get(t, "VARCHAR")


def connect_duckdb(store: ResultStore):
    """An in-memory DuckDB with views `cells` and `examples` over the store (see `register_views`)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # `qmu query` prints its own table; no bar on stderr
    register_views(con, store)
    return con


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


def _repeated(value: str, n: int) -> pa.Array:
    """`n` copies of `value` as a string array, built from its buffers: pa.array() and pa.repeat() import
    pandas on first use, half a second of every `qmu status`."""
    raw = value.encode()
    if n * len(raw) >= 2**31:  # past int32 offsets
        return pa.array([value] * n, pa.string())
    offsets = (np.arange(n + 1, dtype=np.int32) * len(raw)).tobytes()
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))
