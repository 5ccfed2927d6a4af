"""`qmu query`'s sandbox: one read-only SELECT over the store's `cells` and `examples` views.

Two guards, each enough alone for what it covers:

- The statement (`check_read_only`): exactly one SELECT (with CTEs and set operations; DESCRIBE, SHOW and
  SUMMARIZE parse as SELECTs) or `EXPLAIN` of one, without ANALYZE. The check walks DuckDB's own parse tree,
  because the statement type alone says SELECT for `WITH c AS (COPY ...) SELECT 1`, and `EXPLAIN ANALYZE`
  runs the statement it explains.
- The connection (`sandbox`): it may open the store's own Parquet files and nothing else (no other path, no
  new file, no directory listing), with external access off, extensions neither installed nor loaded, and
  its settings locked. DuckDB adds its temp directory to what a connection may read and write, and the
  default is `.tmp` under the working directory: here it is a private folder, removed afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

# Query nodes a read-only statement is made of; DuckDB names the writing ones COPY_QUERY_NODE,
# INSERT_QUERY_NODE, UPDATE_QUERY_NODE, DELETE_QUERY_NODE.
READ_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
LOCKED = ("enable_external_access = false", "autoinstall_known_extensions = false",
          "autoload_known_extensions = false", "lock_configuration = true")


class QueryError(ValueError):
    """A statement `qmu query` does not run, or DuckDB's error running it; str() is one line."""


def duck_error(e: Exception) -> str:
    """DuckDB's message on one line, with its suggestion ('Did you mean "cells"?', 'Candidate bindings: ...');
    an unknown table names the store's views instead of DuckDB's catalog guess."""
    lines = str(e).splitlines() or [type(e).__name__]
    hints = [ln for ln in lines[1:3] if ln.startswith(("Did you mean", "Candidate"))]
    if lines[0].startswith("Catalog Error") and not any("cells" in h or "examples" in h for h in hints):
        hints = ["The store's views are `cells` and `examples` (docs/results.md)."]
    return " ".join([lines[0], *hints])


def check_read_only(sql: str) -> None:
    """Raise QueryError unless `sql` is one SELECT, or EXPLAIN (without ANALYZE) of one."""
    import duckdb

    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(duck_error(e)) from None
    if len(stmts) != 1:
        raise QueryError(f"give exactly one statement (got {len(stmts)})")
    kind, text = stmts[0].type.name, stmts[0].query
    if kind == "EXPLAIN":
        text = _explained(text)
    elif kind != "SELECT":
        raise QueryError(f"{kind} statements are not allowed; `qmu query` runs one read-only SELECT (to export, "
                         "use --format csv or json and redirect the output)")
    bad = sorted(_query_nodes(_parse_tree(text)) - READ_NODES)
    if bad:
        what = ", ".join(n.removesuffix("_QUERY_NODE").removesuffix("_NODE") for n in bad)
        raise QueryError(f"{what} inside a query is not allowed; `qmu query` runs one read-only SELECT")


def _explained(text: str) -> str:
    """The statement after EXPLAIN; ANALYZE (which runs it) and EXPLAIN's options are refused."""
    import duckdb

    tokens = [pos for pos, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]
    rest = text.encode()[tokens[1]:].decode() if len(tokens) > 1 else ""  # positions count bytes
    if rest[:7].upper() in ("ANALYZE", "ANALYSE"):
        raise QueryError("EXPLAIN ANALYZE runs the statement it explains, so it is not allowed; use EXPLAIN")
    if rest[:1] == "(":
        raise QueryError("EXPLAIN's options are not supported here (ANALYZE would run the statement); use "
                         "plain EXPLAIN")
    return rest


def _parse_tree(text: str) -> dict[str, Any]:
    """DuckDB's parse tree of one SELECT, as JSON (parsing runs nothing)."""
    import duckdb

    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):  # not a plain SELECT (PIVOT, or a statement other than SELECT after EXPLAIN)
        if tree.get("error_type") == "parser":
            raise QueryError(f"Parser Error: {tree.get('error_message')}")
        raise QueryError("only a plain read-only SELECT runs here, or EXPLAIN of one (PIVOT is not supported: "
                         "use aggregates with FILTER)")
    return tree


def _query_nodes(tree: Any) -> set[str]:
    """Every query-node type in the tree: those of subqueries, CTEs and set operations included."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                found.add(kind)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


@contextmanager
def sandbox(store: Any) -> Iterator[Any]:
    """A DuckDB connection with the store's views that can open the store's Parquet files and nothing else,
    settings locked; its temp folder is private and removed on exit."""
    import duckdb

    from .store import register_views

    tmp = tempfile.mkdtemp(prefix="qmu-query-")
    con = duckdb.connect()
    try:
        con.execute(f"SET temp_directory = {_lit(tmp)}")
        con.execute("SET enable_progress_bar = false")  # `qmu query` prints its own table; no bar on stderr
        register_views(con, store)
        con.execute(f"SET allowed_paths = [{', '.join(_lit(p) for p in _store_files(store))}]")
        con.execute("SET allowed_directories = []")
        for setting in LOCKED:
            con.execute(f"SET {setting}")
        yield con
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _store_files(store: Any) -> list[str]:
    """Every Parquet file of a local store's grids (a remote store is read through pyarrow, not by DuckDB)."""
    if not store.local:
        return []
    return [p for gf in store.all_grid_files() for p in (*gf.compacted_cells, *gf.compacted_examples,
                                                         *gf.pending_cells, *gf.pending_examples)]


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def read_only_query(store: Any, sql: str):
    """The result of `sql` (checked by `check_read_only`) in the sandbox, as a DataFrame."""
    import duckdb

    check_read_only(sql)
    try:
        with sandbox(store) as con:
            return con.execute(sql).df()
    except duckdb.Error as e:
        raise QueryError(duck_error(e)) from None
