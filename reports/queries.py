"""Every number of the report comes from the SQL in this module (DuckDB over the result store's Parquet).

The store is read only here, and only through DuckDB over `harness.store`'s views: `cells` (one row per
cell), `examples` (per-example rows) and the manifests (the cell ids of a grid's latest run, for pending
counts), from a local directory or any pyarrow filesystem URI. Tables and figures both call `aggregate()` /
`roc()` / `compare()`, so a number in a table and the point drawn for it are the same query result.

Intervals (95%):
- per cell: mia_success uses the Wilson interval stored in the row; other rates (accuracies, TPR, flag rate)
  a Wilson interval on the counts recovered from the examples table; AUCs the Hanley-McNeil standard error;
- across seeds (2 or more cells in a group): mean +/- t(0.975, n-1) * sd / sqrt(n);
- a group with one cell keeps that cell's own interval;
- a gap to `retrain` of one cell: difference +/- 1.96 * sqrt(se_cell^2 + se_retrain^2), se from the intervals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import duckdb
import numpy as np
import pandas as pd

AXES = ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots", "seed", "backend")
GROUP_AXES = tuple(a for a in AXES if a != "seed")
SHOT_AXES = ("train_shots", "unlearn_shots", "eval_shots")
from harness.store import STATUSES  # noqa: E402 -- the one list of cell statuses, owned by the writer
# The report's vocabulary: the built-in methods and attack columns (a store written before manifests carried
# the workload's catalog still reads), extended by `learn_catalog` with whatever a store's manifests declare.
METHODS: tuple[str, ...] = ("none", "retrain", "finetune", "ga", "ssd", "rga", "graddiff")  # display order
Z = 1.959963984540054

# The study's attack flags unseen P_eval non-members at this rate (derived from the examples' `study_score`): a
# "MIA success 0.00" means nothing without it (an attack that flags nobody scores 0 on any forget set).
STUDY_FLAG_RATE = "mia_success_flag_rate"
# metric -> (display label, per-cell interval kind, count column for Wilson / first count for AUC)
METRICS: dict[str, tuple[str, str, str | None]] = {
    "mia_success": ("MIA success, study protocol (forget set)", "row", None),
    STUDY_FLAG_RATE: ("study attack's flag rate, unseen non-members", "wilson", "n_nonmembers"),
    "mia_recall_heldout": ("held-out recall (forget set)", "wilson", "n_members"),
    "mia_advantage": ("held-out advantage", "row", None),
    "mia_auc": ("attack AUC", "auc", None),
    "mia_tpr_at_1pct_fpr": ("TPR@1%FPR", "wilson", "n_members"),
    "mia_tpr_at_01pct_fpr": ("TPR@0.1%FPR", "wilson", "n_members"),
    "mia_nonmember_flag_rate": ("flag rate, unseen non-members", "wilson", "n_nonmembers"),
    "mia_fpr_floor": ("FPR floor", "none", None),
    "loss_auc": ("loss-attack AUC", "auc", None),
    "loss_tpr_at_1pct_fpr": ("loss-attack TPR@1%FPR", "wilson", "n_members"),
    "rmia_auc": ("RMIA AUC", "auc", None),
    "rmia_tpr_at_1pct_fpr": ("RMIA TPR@1%FPR", "wilson", "n_members"),
    "lira_auc": ("LiRA AUC", "auc", None),
    "lira_tpr_at_1pct_fpr": ("LiRA TPR@1%FPR", "wilson", "n_members"),
    "acc_train_retain": ("acc. train retain", "wilson", "n_train_retain"),
    "acc_train_forget": ("acc. train forget", "wilson", "n_members"),
    "acc_test_retain": ("acc. test (retained classes)", "wilson", "n_test_retain"),
    "acc_test_forget": ("acc. test (forgotten class)", "wilson", "n_test_forget"),
    "train_seconds": ("train s", "none", None),
    "unlearn_seconds": ("unlearn s", "none", None),
    "attack_seconds": ("attack s", "none", None),
    "eval_seconds": ("eval s", "none", None),
    "circuit_executions": ("circuit executions", "none", None),
    "unlearn_circuits": ("unlearn circuit executions", "none", None),
    "unlearn_circuits_device": ("unlearn circuits on a device", "none", None),
    "train_circuits_device": ("train circuits on a device", "none", None),
    "shots_total": ("shots (total)", "none", None),
    "unlearn_shots_total": ("unlearn shots", "none", None),
    "qpu_seconds": ("QPU s", "none", None),
    "unlearn_steps": ("unlearn steps", "none", None),
    "relearn_steps": ("relearn steps", "none", None),
    "ssd_dampened_fraction": ("SSD dampened fraction", "none", None),
    "n_forget": ("forget-set size", "none", None),
    "n_nonmembers_scored": ("scored non-members", "none", None),
}
BOUNDED = {m for m, (_, kind, _) in METRICS.items() if kind != "none"}
SIGNED = {"mia_advantage"}  # bounded in [-1, 1], not [0, 1]
# gaps to retrain (same model, forget, shots, seed, backend)
GAP_METRICS = ("mia_success", "mia_advantage", "mia_auc", "loss_auc", "rmia_auc", "lira_auc", "acc_train_retain",
               "acc_train_forget", "acc_test_retain", "acc_test_forget")
# columns a section needs; a store written by older code lacks some, and the section is skipped with a note
HELDOUT_COLUMNS = ("mia_advantage", "mia_recall_heldout", "mia_fpr_floor")
PROB_COLUMNS = tuple(f"prob_{i}" for i in range(10))
# per-example scores of the other attacks (examples table), by the ROC's attack name
SCORE_COLUMNS = {"rmia": "rmia_score", "lira": "lira_score"}
ATTACK_NAMES = {"paper-mlp": "paper MLP attack", "loss": "loss attack", "rmia": "RMIA", "lira": "LiRA"}
# membership attacks by the prefix of their ROC columns (`{prefix}_auc`, `{prefix}_tpr_at_1pct_fpr`), for the
# strongest attack of a slice; U-LiRA asks another question (unlearned or retrained?) and stands apart
ROC_ATTACKS = {"mia": "paper MLP (held-out)", "loss": "loss attack", "rmia": "RMIA", "lira": "LiRA"}

# U-LiRA's per-example scores on the unlearned model and on the retrained replica (same forget samples)
ULIRA_PAIR = ("ulira_score", "ulira_score_retrained")

# types of the columns reports rely on, so older or partial stores (and an empty one) still give every column
_COLUMN_TYPES = {
    "cell_id": "VARCHAR", "grid": "VARCHAR", "model": "VARCHAR", "forget": "VARCHAR", "method": "VARCHAR",
    "train_shots": "BIGINT", "unlearn_shots": "BIGINT", "eval_shots": "BIGINT", "seed": "BIGINT",
    "backend": "VARCHAR", "status": "VARCHAR", "error": "VARCHAR", "mia_success_lo": "DOUBLE",
    "mia_success_hi": "DOUBLE", "mia_advantage_lo": "DOUBLE", "mia_advantage_hi": "DOUBLE",
    "unlearn_trajectory": "VARCHAR", "code_version": "VARCHAR", "host": "VARCHAR",
    "finished_at": "TIMESTAMP WITH TIME ZONE",
    **{m: "DOUBLE" for m in METRICS},
}
_EXAMPLE_TYPES = {"cell_id": "VARCHAR", "split": "VARCHAR", "sample_index": "BIGINT", "label": "BIGINT",
                  "prediction": "BIGINT", "loss": "DOUBLE", "attack_score": "DOUBLE"}

def t975(df: float | None) -> float | None:
    """Two-sided 95% Student t quantile for `df` degrees of freedom (scipy.stats.t); None below 1."""
    from scipy import stats

    return None if df is None or df < 1 else float(stats.t.ppf(0.975, df))


def lit(v: Any) -> str:
    """A SQL literal (None -> NULL)."""
    if v is None or (isinstance(v, float) and v != v):
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def where_clause(filters: dict[str, Any] | None, alias: str = "") -> str:
    """AND of `axis IS NOT DISTINCT FROM value` (None matches exact/NULL); a list value means IN."""
    p = f"{alias}." if alias else ""
    parts = []
    for k, v in (filters or {}).items():
        if isinstance(v, (list, tuple, set)):
            vals = list(v)
            ors = [f"{p}{k} IS NOT DISTINCT FROM {lit(x)}" for x in vals]
            parts.append("(" + (" OR ".join(ors) if ors else "FALSE") + ")")
        else:
            parts.append(f"{p}{k} IS NOT DISTINCT FROM {lit(v)}")
    return " AND ".join(parts) if parts else "TRUE"


# ------------------------------------------------------------------------------------------------ connection
# The Wilson bounds hold p between them: in floating point the lower one came out 1.7e-18 at p = 0.
_MACROS = f"""
CREATE MACRO wilson_lo(p, n) AS CASE WHEN n IS NULL OR n <= 0 OR p IS NULL OR isnan(p) THEN NULL ELSE
  least(p, greatest(0.0, (p + {Z}^2/(2*n) - {Z} * sqrt(p*(1-p)/n + {Z}^2/(4*n*n))) / (1 + {Z}^2/n))) END;
CREATE MACRO wilson_hi(p, n) AS CASE WHEN n IS NULL OR n <= 0 OR p IS NULL OR isnan(p) THEN NULL ELSE
  greatest(p, least(1.0, (p + {Z}^2/(2*n) + {Z} * sqrt(p*(1-p)/n + {Z}^2/(4*n*n))) / (1 + {Z}^2/n))) END;
CREATE MACRO hanley_se(a, n1, n2) AS CASE WHEN n1 IS NULL OR n2 IS NULL OR n1 <= 0 OR n2 <= 0 OR a IS NULL
  OR isnan(a) THEN NULL ELSE sqrt(greatest(0.0, (a*(1-a) + (n1-1)*(a/(2-a) - a*a) + (n2-1)*(2*a*a/(1+a) - a*a))
  / (n1*n2))) END;
CREATE MACRO clip_lo(x, a) AS CASE WHEN x IS NULL THEN NULL ELSE greatest(x, a) END;
CREATE MACRO clip_hi(x, a) AS CASE WHEN x IS NULL THEN NULL ELSE least(x, a) END;
"""


@dataclass
class Store:
    """A DuckDB connection with views over one results root."""

    root: str
    con: duckdb.DuckDBPyConnection
    has_cells: bool
    has_examples: bool
    has_manifests: bool
    extra_columns: list[str] = field(default_factory=list)
    columns: frozenset[str] = frozenset()  # cell columns the store really has (before NULL padding)
    example_columns: frozenset[str] = frozenset()

    def has(self, *cols: str) -> bool:
        """Whether the store's cells (or examples, for prob_*/population) carry every column in `cols`."""
        return all(c in self.columns or c in self.example_columns for c in cols)

    def df(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def close(self) -> None:
        self.con.close()


def learn_catalog(catalogs: Iterable[dict[str, Any] | None]) -> None:
    """Add the methods and attack columns that the stores' manifests declare (the workload's registries, as
    `qmu run` recorded them) to the report's vocabulary: a method in its declared order, an attack's columns
    with their labels and interval kinds, its per-example score column and its AUC as a gap to retrain."""
    global METHODS, GAP_METRICS
    methods: dict[str, float] = {}
    for cat in filter(None, catalogs):
        for name, m in cat.get("methods", {}).items():
            methods.setdefault(name, float(m.get("order", 1e9)))
        for name, a in sorted(cat.get("attacks", {}).items(), key=lambda kv: kv[1].get("order", 1e9)):
            for col, (label, kind, count) in a.get("columns", {}).items():
                METRICS.setdefault(col, (label, kind, count))
                if METRICS[col][1] != "none":  # a rate or an AUC: its interval stays inside [0, 1]
                    BOUNDED.add(col)
                if col.endswith("_auc") and col not in GAP_METRICS:
                    GAP_METRICS = (*GAP_METRICS, col)
            # a membership attack scores members against unseen non-members; U-LiRA scores the forget set on two
            # models (ULIRA_PAIR) and has its own table, not a ROC against P_eval
            prefix = a.get("roc_prefix") if name != "ulira" else None
            if prefix:
                ROC_ATTACKS.setdefault(prefix, a.get("label", name))
            score = a.get("score_column")
            if prefix and score and score not in ("attack_score", "study_score"):
                SCORE_COLUMNS.setdefault(name, score)
                ATTACK_NAMES.setdefault(name, a.get("label", name))
    new = sorted((o, n) for n, o in methods.items() if n not in METHODS)
    METHODS = (*METHODS, *(n for _, n in new))


def _metric_types() -> dict[str, str]:
    """Every metric as DOUBLE, and the stored interval bounds of the metrics whose rows carry them."""
    out = {m: "DOUBLE" for m in METRICS}
    out.update({f"{m}{x}": "DOUBLE" for m, (_, kind, _) in METRICS.items() if kind == "row" for x in ("_lo", "_hi")})
    return out


def connect(root: str) -> Store:
    """Tables `cells`, `examples`, `manifest_cells` read once from the store (so every later query is in memory),
    and the derived per-cell tables `cell_n` (sample counts), `cell_ci` (ok cells with per-cell intervals) and
    `cell_all` (cell_ci plus the gap to the matching retrain cell). The store is any results root `qmu run`
    writes (a local directory or a pyarrow filesystem URI), read through `harness.store`: compacted and
    pending files together, each cell once."""
    from harness.store import ResultStore, register_views

    root = os.path.abspath(root) if "://" not in root else root.rstrip("/")
    store = ResultStore(root)
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")  # its bar would land in the middle of report output
    con.create_function("t975", t975, ["BIGINT"], "DOUBLE")
    con.execute(_MACROS)
    n_cells, has_examples = register_views(con, store, cells="store_cells", examples="store_examples")
    found = [(g, m) for g in store.grids() if (m := store.manifest(g))]
    learn_catalog(m.get("catalog") for _, m in found)
    manifests = [(g, c) for g, m in found for c in m.get("cells", [])]

    def empty(types: dict[str, str]) -> str:
        return "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in types.items()) + " WHERE FALSE"

    extra: list[str] = []
    have: set[str] = set()
    ex_have: set[str] = set()
    if n_cells:
        have = {r[0] for r in con.execute("DESCRIBE store_cells").fetchall()}
        types = {**_COLUMN_TYPES, **_metric_types()}  # METRICS as the catalog extended it
        missing = [c for c in types if c not in have]
        extra = sorted(have - set(types))
        # metrics as DOUBLE (a column unknown in every row is Arrow's null type); the store's view already
        # reads NaN as NULL (harness.store.register_views), so aggregates skip unknown values
        src = "store_cells"
        if has_examples and _study_flags(con, have):
            src = "store_cells LEFT JOIN study_flags USING (cell_id)"
            have.add(STUDY_FLAG_RATE)
            missing.remove(STUDY_FLAG_RATE)
        adds = "".join(f", NULL::{types[c]} AS {c}" for c in missing)
        repl = ", ".join(f"{m}::DOUBLE AS {m}" for m in METRICS if m not in missing)
        con.execute(f"CREATE TEMP TABLE cells AS SELECT * REPLACE ({repl}){adds} FROM {src}")
    else:
        con.execute(f"CREATE VIEW cells AS {empty({**_COLUMN_TYPES, **_metric_types()})}")
    if has_examples and n_cells:
        ex_have = {r[0] for r in con.execute("DESCRIBE SELECT * FROM store_examples").fetchall()}
        probs = [c for c in (*PROB_COLUMNS, *SCORE_COLUMNS.values(), *ULIRA_PAIR) if c in ex_have]
        # store_examples holds exactly the examples of the rows in store_cells (register_views)
        con.execute(f"CREATE TEMP TABLE examples AS SELECT {', '.join([*_EXAMPLE_TYPES, *probs])} FROM store_examples")
    else:
        con.execute(f"CREATE VIEW examples AS {empty(_EXAMPLE_TYPES)}")
    if manifests:
        import pyarrow as pa

        con.register("_manifests", pa.table({"grid": [g for g, _ in manifests], "cell_id": [c for _, c in manifests]}))
        con.execute("CREATE TEMP TABLE manifest_cells AS SELECT grid, cell_id FROM _manifests")
    else:
        con.execute("CREATE VIEW manifest_cells AS SELECT NULL::VARCHAR AS grid, NULL::VARCHAR AS cell_id WHERE FALSE")
    _derived_views(con)
    if ex_have and con.execute("SELECT count(*) FROM examples WHERE split = 'population'").fetchone()[0]:
        ex_have.add("population")
    return Store(root, con, bool(n_cells), has_examples, bool(manifests), extra, frozenset(have), frozenset(ex_have))


def _study_flags(con: duckdb.DuckDBPyConnection, cell_columns: set[str]) -> bool:
    """Table `study_flags`: per cell, the share of its scored P_eval non-members (`population` rows) that the
    study's attack flags as members (log-odds `study_score` at or above its threshold, 0.5 unless the cell's
    `params` override `attack.threshold`). False, and no table, where the store has no such scores."""
    ex = {r[0] for r in con.execute("DESCRIBE SELECT * FROM store_examples").fetchall()}
    if "study_score" not in ex:
        return False
    t = ("coalesce(TRY_CAST(json_extract_string(c.params, '$.attack.threshold') AS DOUBLE), 0.5)"
         if "params" in cell_columns else "0.5")
    con.execute(f"""
    CREATE TEMP TABLE study_flags AS
      SELECT e.cell_id, avg((e.study_score >= ln({t}) - ln(1 - {t}))::DOUBLE) AS {STUDY_FLAG_RATE}
      FROM store_examples e JOIN store_cells c ON c.cell_id = e.cell_id
      WHERE e.split = 'population' AND e.study_score IS NOT NULL
      GROUP BY e.cell_id""")
    return True


# the matching retrain cell's columns that cell_all carries, as retrain_<column>
RETRAIN_COLUMNS = ("cell_id", "mia_auc", "unlearn_circuits_device", "unlearn_circuits", "unlearn_seconds",
                   "relearn_steps")

def _derived_views(con: duckdb.DuckDBPyConnection) -> None:
    # per-cell sample counts (from examples; falls back to n_forget for the member count)
    con.execute("""
    CREATE TEMP TABLE forget_labels AS
      SELECT cell_id, list_distinct(list(label)) AS labels FROM examples WHERE split = 'train_forget' GROUP BY cell_id;
    CREATE TEMP TABLE cell_n AS
      SELECT c.cell_id,
        coalesce(nullif(count(e.cell_id) FILTER (WHERE e.split = 'train_forget'), 0), any_value(c.n_forget)::BIGINT)
          AS n_members,
        coalesce(any_value(c.n_nonmembers_scored)::BIGINT,
                 nullif(count(e.cell_id) FILTER (WHERE e.split = 'population'), 0),
                 count(e.cell_id) FILTER (WHERE e.split = 'test' AND list_contains(f.labels, e.label))) AS n_nonmembers,
        count(e.cell_id) FILTER (WHERE e.split = 'train_retain') AS n_train_retain,
        count(e.cell_id) FILTER (WHERE e.split = 'test' AND c.forget LIKE 'class:%'
                                 AND e.label = TRY_CAST(split_part(c.forget, ':', 2) AS BIGINT)) AS n_test_forget,
        count(e.cell_id) FILTER (WHERE e.split = 'test' AND NOT (c.forget LIKE 'class:%'
                                 AND e.label = TRY_CAST(split_part(c.forget, ':', 2) AS BIGINT))) AS n_test_retain
      FROM cells c LEFT JOIN examples e ON e.cell_id = c.cell_id LEFT JOIN forget_labels f ON f.cell_id = c.cell_id
      WHERE c.status = 'ok'
      GROUP BY c.cell_id
    """)
    cols = []
    for m, (_, kind, ncol) in METRICS.items():
        if kind == "row":
            lo, hi = f"c.{m}_lo", f"c.{m}_hi"
        elif kind == "wilson":
            n = f"nullif(n.{ncol}, 0)"
            lo, hi = f"wilson_lo(c.{m}, {n})", f"wilson_hi(c.{m}, {n})"
        elif kind == "auc":
            se = f"hanley_se(c.{m}, nullif(n.n_members, 0), nullif(n.n_nonmembers, 0))"
            lo, hi = f"clip_lo(c.{m} - {Z} * {se}, 0.0)", f"clip_hi(c.{m} + {Z} * {se}, 1.0)"
        else:
            lo = hi = "NULL::DOUBLE"
        cols.append(f"{lo} AS {m}_lo, {hi} AS {m}_hi")
    # cell_ci is built once, inside cell_all (it joins itself to its retrain rows); cell_ci is then a view
    con.execute(f"""
    CREATE TEMP TABLE cell_all AS
      WITH cell_ci AS MATERIALIZED (
      SELECT c.* EXCLUDE ({", ".join(f"{m}{x}" for m, (_, k, _) in METRICS.items() if k == "row" for x in ("_lo", "_hi"))}), n.n_members, n.n_nonmembers, n.n_train_retain,
             n.n_test_forget, n.n_test_retain, {', '.join(cols)}
      FROM cells c JOIN cell_n n USING (cell_id) WHERE c.status = 'ok')
      {_with_retrain()}
    """)
    added = [f"retrain_{c}" for c in RETRAIN_COLUMNS] + [f"gap_{m}{x}" for m in GAP_METRICS for x in ("", "_lo", "_hi")]
    con.execute(f"CREATE TEMP VIEW cell_ci AS SELECT * EXCLUDE ({', '.join(added)}) FROM cell_all")



def _with_retrain() -> str:
    """cell_ci's rows with their matching retrain cell's costs and the gaps to it (the body of cell_all)."""
    gaps = []
    for m in GAP_METRICS:
        se = f"(({{a}}.{m}_hi - {{a}}.{m}_lo) / (2 * {Z}))"
        comb = f"sqrt(coalesce({se.format(a='c')}^2, 0) + coalesce({se.format(a='r')}^2, 0))"
        d = f"(CASE WHEN c.method <> 'retrain' THEN c.{m} - r.{m} END)"  # retrain's gap to itself says nothing
        gaps.append(f"{d} AS gap_{m}, CASE WHEN {comb} > 0 THEN clip_lo({d} - {Z} * {comb}, -1.0) END AS gap_{m}_lo, "
                    f"CASE WHEN {comb} > 0 THEN clip_hi({d} + {Z} * {comb}, 1.0) END AS gap_{m}_hi")
    on = " AND ".join(f"r.{a} IS NOT DISTINCT FROM c.{a}" for a in AXES if a != "method")
    return f"""
      SELECT c.*, {', '.join(f"r.{c} AS retrain_{c}" for c in RETRAIN_COLUMNS)}, {', '.join(gaps)}
      FROM cell_ci c LEFT JOIN (SELECT * FROM cell_ci WHERE method = 'retrain') r ON r.grid = c.grid AND {on}"""


# ------------------------------------------------------------------------------------------------ status
def grids(s: Store) -> list[str]:
    rows = s.con.execute("SELECT DISTINCT grid FROM cells UNION SELECT DISTINCT grid FROM manifest_cells "
                         "ORDER BY 1").fetchall()
    return [r[0] for r in rows if r[0] is not None]


def status_counts(s: Store, grid: str) -> dict[str, int]:
    """ok / failed / budget_skipped / pending / total. Pending = manifest cells without a stored row."""
    g = lit(grid)
    row = s.con.execute(f"""
      WITH st AS (SELECT cell_id, status FROM cells WHERE grid = {g}),
           man AS (SELECT cell_id FROM manifest_cells WHERE grid = {g})
      SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'failed'),
             count(*) FILTER (WHERE status = 'budget_skipped'),
             count(*) FILTER (WHERE status NOT IN ('ok', 'failed', 'budget_skipped') OR status IS NULL),
             (SELECT count(*) FROM man WHERE cell_id NOT IN (SELECT cell_id FROM st)),
             (SELECT count(*) FROM man), count(*)
      FROM st""").fetchone()
    ok, failed, skipped, other, pending, n_manifest, n_stored = row
    return {"ok": ok, "failed": failed, "budget_skipped": skipped, "other": other, "pending": pending,
            "in_manifest": n_manifest, "stored": n_stored, "total": n_stored + pending}


def failures(s: Store, grid: str, limit: int = 12) -> pd.DataFrame:
    """Failed / skipped cells grouped by the first line of their error."""
    return s.df(f"""
      SELECT status, coalesce(split_part(error, chr(10), 1), '(no error text)') AS error, count(*) AS cells,
             string_agg(DISTINCT method, ', ' ORDER BY method) AS methods,
             string_agg(DISTINCT model, ', ' ORDER BY model) AS models
      FROM cells WHERE grid = {lit(grid)} AND status <> 'ok'
      GROUP BY ALL ORDER BY cells DESC, error LIMIT {int(limit)}""")


def axis_values(s: Store, grid: str, ok_only: bool = True) -> dict[str, list[Any]]:
    """Distinct values of each axis (None = exact) among the grid's cells."""
    cond = " AND status = 'ok'" if ok_only else ""
    out: dict[str, list[Any]] = {}
    for a in AXES:
        rows = s.con.execute(f"SELECT DISTINCT {a} FROM cells WHERE grid = {lit(grid)}{cond}").fetchall()
        out[a] = sort_axis(a, [r[0] for r in rows])
    return out


def sort_axis(axis: str, values: Iterable[Any]) -> list[Any]:
    vals = list(values)
    if axis in SHOT_AXES:  # exact (NULL) last, shots ascending
        return sorted(vals, key=lambda v: (v is None, v if v is not None else 0))
    if axis == "method":
        return sorted(vals, key=lambda v: (METHODS.index(v) if v in METHODS else len(METHODS), str(v)))
    if axis == "forget":
        return sorted(vals, key=forget_key)
    return sorted(vals, key=lambda v: (v is None, v))


def forget_key(v: Any) -> tuple:
    kind, _, arg = str(v).partition(":")
    n = int(arg) if arg.isdigit() else 0
    return ({"random": 0, "class": 1}.get(kind, 2), n, str(v))


def missing_combinations(s: Store, grid: str) -> int:
    """Axis combinations (of values that appear among the grid's cells) that have no ok cell."""
    vals = axis_values(s, grid, ok_only=False)
    total = 1
    for v in vals.values():
        total *= max(len(v), 1)
    (ok,) = s.con.execute(f"SELECT count(DISTINCT ({', '.join(AXES)})) FROM cells "
                          f"WHERE grid = {lit(grid)} AND status = 'ok'").fetchone()
    return total - ok if ok else total


def provenance(s: Store, grid: str) -> dict[str, Any]:
    row = s.con.execute(f"""SELECT string_agg(DISTINCT code_version, ', '), string_agg(DISTINCT host, ', '),
                                   strftime(timezone('UTC', min(finished_at)), '%Y-%m-%d %H:%M:%S UTC'),
                                   strftime(timezone('UTC', max(finished_at)), '%Y-%m-%d %H:%M:%S UTC'), string_agg(DISTINCT backend, ', ')
                            FROM cells WHERE grid = {lit(grid)}""").fetchone()
    return dict(zip(("code_version", "hosts", "first", "last", "backends"), row))


def reference_slice(s: Store, grid: str) -> dict[str, Any]:
    """The values other axes are held at when a figure varies one axis: exact shots where present (else the
    most shots), the first `class:` forget set (else the largest), the most common backend."""
    vals = axis_values(s, grid)
    ref: dict[str, Any] = {}
    for a in SHOT_AXES:
        v = vals[a]
        ref[a] = None if (None in v or not v) else max(v)
    forgets = vals["forget"]
    classes = [f for f in forgets if str(f).startswith("class:")]
    ref["forget"] = classes[0] if classes else (forgets[-1] if forgets else None)
    row = s.con.execute(f"SELECT backend FROM cells WHERE grid = {lit(grid)} AND status = 'ok' "
                        f"GROUP BY backend ORDER BY count(*) DESC, backend LIMIT 1").fetchone()
    ref["backend"] = row[0] if row else None
    return ref


# ------------------------------------------------------------------------------------------------ aggregates
def interval_text(lo: float | None, hi: float | None, digits: int = 2) -> str:
    """' [lo, hi]' with as many decimals (up to 4) as it takes to keep a non-zero width visible; '' when the
    interval is unknown or has no width (nothing varied and no cell carries an interval of its own)."""
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) or hi <= lo:
        return ""
    d = digits
    while d < 4 and f"{lo:.{d}f}" == f"{hi:.{d}f}":
        d += 1
    return f" [{lo:.{d}f}, {hi:.{d}f}]"


def aggregate_sql(by: Iterable[str], where: str = "TRUE", metrics: Iterable[str] | None = None) -> str:
    """Mean and 95% interval of each metric (and gap to retrain) over the cells of each `by` group."""
    by = list(by)
    names = list(metrics or METRICS) + [f"gap_{m}" for m in GAP_METRICS]
    sel = []
    for m in names:
        base = m.removeprefix("gap_")
        bounded = base in BOUNDED
        signed = m.startswith("gap_") or m in SIGNED
        lo_clip, hi_clip = ((-1.0, 1.0) if signed else (0.0, 1.0)) if bounded else (None, None)
        half = f"t975(count({m}) - 1) * stddev_samp({m}) / sqrt(count({m}))"
        has_cell_ci = m.startswith("gap_") or METRICS[base][1] != "none"
        one_lo, one_hi = (f"min({m}_lo)", f"max({m}_hi)") if has_cell_ci else ("NULL", "NULL")
        t_lo, t_hi = f"avg({m}) - {half}", f"avg({m}) + {half}"
        if has_cell_ci:  # never narrower than the seeds' own intervals: all-zero rates keep their Wilson width
            t_lo, t_hi = f"least({t_lo}, coalesce(avg({m}_lo), {t_lo}))", f"greatest({t_hi}, coalesce(avg({m}_hi), {t_hi}))"
        lo = f"CASE WHEN count({m}) >= 2 THEN {t_lo} ELSE {one_lo} END"
        hi = f"CASE WHEN count({m}) >= 2 THEN {t_hi} ELSE {one_hi} END"
        if lo_clip is not None:
            lo, hi = f"clip_lo({lo}, {lo_clip})", f"clip_hi({hi}, {hi_clip})"
        elif not m.startswith("gap_"):
            lo = f"clip_lo({lo}, 0.0)"
        sel.append(f"avg({m}) AS {m}, {lo} AS {m}_lo, {hi} AS {m}_hi")
    keys = ", ".join(by)
    return f"""
      SELECT {keys + ',' if by else ''} count(*) AS n_cells, count(DISTINCT seed) AS n_seeds,
             string_agg(DISTINCT seed::VARCHAR, ',' ORDER BY seed::VARCHAR) AS seeds,
             count(retrain_cell_id) AS n_with_retrain,
             {(',' + chr(10) + '             ').join(sel)}
      FROM cell_all WHERE {where}
      {'GROUP BY ' + keys if by else ''}
      {'ORDER BY ' + keys if by else ''}"""


def aggregate(s: Store, by: Iterable[str], filters: dict[str, Any] | None = None,
              metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per `by` group of ok cells matching `filters` (axis -> value; None = exact)."""
    df = s.df(aggregate_sql(by, where_clause(filters), metrics))
    return _order(df, list(by))


def _order(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort groups in display order (exact shots last, methods in docs/methods.md order); NULL shots become None."""
    for a in SHOT_AXES + ("seed",):
        if a in df:
            df[a] = pd.Series([None if pd.isna(v) else int(v) for v in df[a]], index=df.index, dtype=object)
    if df.empty:
        return df
    keys = []
    for a in by:
        if a in AXES:
            order = {v: i for i, v in enumerate(sort_axis(a, df[a].dropna().unique().tolist()))}
            keys.append(df[a].map(lambda v: len(order) if v is None or pd.isna(v) else order.get(v, len(order))))
        else:
            keys.append(df[a])
    idx = sorted(range(len(df)), key=lambda i: tuple(k.iloc[i] for k in keys))
    return df.iloc[idx].reset_index(drop=True)


def table_sql(grid: str, ref: dict[str, Any]) -> str:
    """The headline table: per method x model at the reference slice (the SQL shown in the report)."""
    return aggregate_sql(["model", "method"], where_clause({"grid": grid, **ref}))


def headline_table(s: Store, grid: str, ref: dict[str, Any]) -> pd.DataFrame:
    return _order(s.df(table_sql(grid, ref)), ["model", "method"])


# ------------------------------------------------------------------------------------------------ ROC
FPR_GRID_SQL = "SELECT pow(10, -3 + i * 3.0 / 48) AS fpr FROM range(0, 49) t(i)"


def roc(s: Store, by: Iterable[str], filters: dict[str, Any] | None = None) -> pd.DataFrame:
    """TPR at a log-spaced FPR grid (1e-3..1) between forget-set members and the scored non-members (the
    `population` rows, i.e. P_eval; in stores without them, same-class test samples), for the paper attack's
    score and the loss attack (score = -loss), averaged over the cells of each group.
    Per cell, TPR(f) = the largest TPR of a threshold whose FPR <= f (the empirical ROC step function)."""
    by = list(by)
    keys = ", ".join(f"c.{a}" for a in by)
    where = where_clause(filters, "c")
    scores = ", ".join(["('paper-mlp', e.attack_score)", "('loss', -e.loss)"]
                       + [f"('{a}', e.{c})" for a, c in SCORE_COLUMNS.items() if s.has(c)])
    return _order(s.df(f"""
      WITH sel AS (SELECT * FROM cell_ci c WHERE {where}),
      pop AS (SELECT DISTINCT cell_id FROM examples WHERE split = 'population'),
      ex AS (
        SELECT e.cell_id, e.split = 'train_forget' AS member, a.attack, a.score
        FROM examples e JOIN sel ON sel.cell_id = e.cell_id JOIN forget_labels f ON f.cell_id = e.cell_id,
             LATERAL (VALUES {scores}) a(attack, score)
        WHERE a.score IS NOT NULL AND NOT isnan(a.score) AND (e.split = 'train_forget'
           OR (e.split = 'population' AND e.cell_id IN (SELECT cell_id FROM pop))
           OR (e.split = 'test' AND e.cell_id NOT IN (SELECT cell_id FROM pop) AND list_contains(f.labels, e.label)))),
      tot AS (SELECT cell_id, attack, count(*) FILTER (WHERE member) AS np, count(*) FILTER (WHERE NOT member) AS nn
              FROM ex GROUP BY ALL),
      thr AS (SELECT cell_id, attack, score, count(*) FILTER (WHERE member) AS tp, count(*) FILTER (WHERE NOT member) AS fp
              FROM ex WHERE score IS NOT NULL AND NOT isnan(score) GROUP BY ALL),
      pts AS (
        SELECT t.cell_id, t.attack,
               sum(tp) OVER w / nullif(tot.np, 0) AS tpr, sum(fp) OVER w / nullif(tot.nn, 0) AS fpr
        FROM thr t JOIN tot USING (cell_id, attack)
        WINDOW w AS (PARTITION BY t.cell_id, t.attack ORDER BY t.score DESC ROWS UNBOUNDED PRECEDING)),
      curve AS (
        SELECT p.cell_id, p.attack, g.fpr AS fpr_grid, coalesce(max(p.tpr) FILTER (WHERE p.fpr <= g.fpr + 1e-12), 0.0) AS tpr
        FROM pts p, ({FPR_GRID_SQL}) g GROUP BY ALL)
      SELECT {keys + ',' if by else ''} cu.attack, cu.fpr_grid AS fpr, count(*) AS n_cells, avg(cu.tpr) AS tpr,
             CASE WHEN count(*) >= 2 THEN clip_lo(avg(cu.tpr) - t975(count(*) - 1) * stddev_samp(cu.tpr) / sqrt(count(*)), 0.0)
                  ELSE wilson_lo(avg(cu.tpr), min(c.n_members)) END AS tpr_lo,
             CASE WHEN count(*) >= 2 THEN clip_hi(avg(cu.tpr) + t975(count(*) - 1) * stddev_samp(cu.tpr) / sqrt(count(*)), 1.0)
                  ELSE wilson_hi(avg(cu.tpr), min(c.n_members)) END AS tpr_hi,
             min(c.n_nonmembers) AS min_nonmembers
      FROM curve cu JOIN sel c ON c.cell_id = cu.cell_id
      GROUP BY ALL ORDER BY ALL"""), by + ["attack", "fpr"])


# ------------------------------------------------------------------------------------------------ compare
def side_filter(s: Store, name: str, grid: str | None = None) -> tuple[str, str]:
    """(SQL condition, description) selecting side `name`: a grid if one has that name, else a backend."""
    if name in grids(s):
        return f"grid = {lit(name)}", f"grid {name}"
    (n,) = s.con.execute(f"SELECT count(*) FROM cells WHERE backend = {lit(name)}").fetchone()
    if n:
        cond = f"backend = {lit(name)}" + (f" AND grid = {lit(grid)}" if grid else "")
        return cond, f"backend {name}" + (f" (grid {grid})" if grid else "")
    raise ValueError(f"--compare: {name!r} is neither a grid nor a backend in the store "
                     f"(grids: {', '.join(grids(s)) or 'none'})")


COMPARE_KEYS = ("model", "forget", "method", "train_shots", "unlearn_shots", "eval_shots")
COMPARE_METRICS = ("mia_success", STUDY_FLAG_RATE, "mia_auc", "mia_tpr_at_1pct_fpr", "acc_test_retain", "acc_test_forget",
                   "acc_train_forget", "gap_mia_success", "gap_acc_test_retain")


def compare(s: Store, a: str, b: str, grid: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """Side-by-side aggregates of two grids or backends, matched on model, forget, method and shot counts."""
    ca, da = side_filter(s, a, grid)
    cb, db = side_filter(s, b, grid)
    keys = list(COMPARE_KEYS)
    mets = [m for m in COMPARE_METRICS if not m.startswith("gap_")]
    qa, qb = aggregate_sql(keys, ca, mets), aggregate_sql(keys, cb, mets)
    cols = []
    for m in COMPARE_METRICS:
        for side in ("a", "b"):
            cols.append(f"{side}.{m} AS {m}_{side}, {side}.{m}_lo AS {m}_lo_{side}, {side}.{m}_hi AS {m}_hi_{side}")
        cols.append(f"b.{m} - a.{m} AS {m}_delta")
    on = " AND ".join(f"a.{k} IS NOT DISTINCT FROM b.{k}" for k in keys)
    df = s.df(f"""
      WITH a AS ({qa}), b AS ({qb})
      SELECT {', '.join(f'coalesce(a.{k}, b.{k}) AS {k}' for k in keys)},
             a.n_seeds AS n_seeds_a, b.n_seeds AS n_seeds_b, {', '.join(cols)}
      FROM a FULL OUTER JOIN b ON {on}""")
    return _order(df, keys), da, db


# ------------------------------------------------------------------------------------------------ vs retrain
def at_axes(df: pd.DataFrame, where: dict[str, Any]) -> pd.Series:
    """Rows of a frame at the axis values of `where` (None = exact shots, matching NULL/NaN), as a mask."""
    keep = pd.Series(True, index=df.index)
    for k, x in where.items():
        if k in df:
            keep &= df[k].map(lambda y, x=x: (y is None or pd.isna(y)) if x is None else y == x)
    return keep


def seed_mean(df: pd.DataFrame, by: list[str], cols: Iterable[str],
              bounds: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Mean of each column over the rows (seeds) of each `by` group, with a 95% t interval (scipy.stats.t),
    clipped to the column's `bounds` where given; one row keeps no interval. NaN values are skipped, as SQL
    aggregates skip NULL."""
    cols, bounds = list(cols), bounds or {}
    out = []
    for key, g in df.groupby(by, dropna=False, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = g["seed"].nunique() if "seed" in g else len(g)
        for c in cols:
            v = pd.to_numeric(g[c], errors="coerce").dropna().to_numpy(float)
            row[c] = v.mean() if len(v) else float("nan")
            half = t975(len(v) - 1) * v.std(ddof=1) / len(v) ** 0.5 if len(v) >= 2 else float("nan")
            lo, hi = bounds.get(c, (-np.inf, np.inf))
            row[f"{c}_lo"], row[f"{c}_hi"] = np.clip(row[c] - half, lo, hi), np.clip(row[c] + half, lo, hi)
        out.append(row)
    res = pd.DataFrame(out)
    return _order(res, by) if not res.empty else res


def _kl(p: str, q: str) -> str:
    return " + ".join(f"{p}{i} * ln({p}{i} / {q}{i})" for i in range(10))


def closeness_cells(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """Per unlearned cell (and `none`) against its matching `retrain` cell: mean KL(unlearned || retrain) and
    mean Jensen-Shannon distance (base 2) of the 10 output probabilities on the forget set and on the test set,
    forget quality (KS-test p-value of the per-example forget-set losses) and privleak ((AUC - AUC_retrain) /
    AUC_retrain of the held-out attack). Needs the examples' prob_0..prob_9; empty when the store lacks them."""
    from scipy import stats

    if not s.has(*PROB_COLUMNS):
        return pd.DataFrame()
    eps = 1e-12
    pu = ", ".join(f"greatest(e.prob_{i}, {eps}) AS u{i}" for i in range(10))
    pr = ", ".join(f"greatest(r.prob_{i}, {eps}) AS r{i}" for i in range(10))
    mid = ", ".join(f"(u{i} + r{i}) / 2 AS m{i}" for i in range(10))
    keys = ", ".join(f"c.{a}" for a in AXES)
    pairs = s.df(f"""
      WITH sel AS (SELECT * FROM cell_all c WHERE {where_clause(filters, 'c')} AND c.method <> 'retrain'
                                                 AND c.retrain_cell_id IS NOT NULL),
      p AS (SELECT e.cell_id, e.split, e.loss AS loss_u, r.loss AS loss_r, {pu}, {pr}
            FROM sel JOIN examples e ON e.cell_id = sel.cell_id
                     JOIN examples r ON r.cell_id = sel.retrain_cell_id AND r.split = e.split
                                    AND r.sample_index = e.sample_index
            WHERE e.split IN ('train_forget', 'test')),
      m AS (SELECT *, {mid} FROM p)
      SELECT cell_id, split, loss_u, loss_r, {_kl('u', 'r')} AS kl,
             sqrt(greatest(0.0, 0.5 * ({_kl('u', 'm')}) + 0.5 * ({_kl('r', 'm')})) / ln(2)) AS js
      FROM m""")
    cells = s.df(f"""SELECT {keys}, c.cell_id, c.mia_auc, c.retrain_mia_auc FROM cell_all c
                     WHERE {where_clause(filters, 'c')} AND c.method <> 'retrain' AND c.retrain_cell_id IS NOT NULL""")
    if pairs.empty or cells.empty:
        return pd.DataFrame()
    rows = []
    for cid, g in pairs.groupby("cell_id"):
        f, t = g[g["split"] == "train_forget"], g[g["split"] == "test"]
        fq = stats.ks_2samp(f["loss_u"], f["loss_r"]).pvalue if len(f) >= 2 else float("nan")
        rows.append({"cell_id": cid, "kl_forget": f["kl"].mean(), "kl_test": t["kl"].mean(),
                     "js_forget": f["js"].mean(), "js_test": t["js"].mean(), "forget_quality": float(fq)})
    out = cells.merge(pd.DataFrame(rows), on="cell_id")
    out["privleak"] = (out["mia_auc"] - out["retrain_mia_auc"]) / out["retrain_mia_auc"]
    return out


CIRCUIT_COLUMNS = ("circuit_hash", "circuit_qubits", "circuit_parameters", "circuit_depth", "circuit_two_qubit_gates")


def circuit_models(s: Store, grid: str) -> pd.DataFrame:
    """One row per model of the grid that is a user's circuit: its provenance columns (the hash of its QPY
    bytes, qubits, parameters, depth, two-qubit gates); empty when the grid has none."""
    if not s.has(*CIRCUIT_COLUMNS):
        return pd.DataFrame(columns=["model", *CIRCUIT_COLUMNS])
    cols = ", ".join(f"any_value({c}) AS {c}" for c in CIRCUIT_COLUMNS)
    return s.df(f"""SELECT model, {cols}, count(DISTINCT circuit_hash) AS n_hashes FROM cell_ci
                    WHERE {where_clause({'grid': grid})} AND circuit_hash IS NOT NULL GROUP BY model ORDER BY model""")


def model_labels(circuits: pd.DataFrame) -> dict[str, str]:
    """Display names: a circuit model's name with the first 8 hex digits of its hash."""
    return {r.model: f"{r.model} ({r.circuit_hash[:8]})" for r in circuits.itertuples()}


FLOOR_COLUMNS = ("floor_kl_forget", "floor_kl_test", "floor_js_forget", "floor_js_test", "floor_loss_ks",
                 "floor_loss_auc")


def floor_cells(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """Per `retrain` cell that ran replicas (`retrain.replicas` > 1): its noise-floor columns, renamed to the
    closeness columns they bound (kl_forget, ..., loss_ks, loss_auc_change); empty when the store has none."""
    if not s.has(*FLOOR_COLUMNS):
        return pd.DataFrame()
    keys = ", ".join(f"c.{a}" for a in AXES)
    cols = ", ".join(f"c.{c} AS {c.removeprefix('floor_')}" for c in FLOOR_COLUMNS)
    df = s.df(f"""SELECT {keys}, c.cell_id, {cols} FROM cell_all c
                  WHERE {where_clause({**filters, 'method': 'retrain'}, 'c')} AND c.floor_js_forget IS NOT NULL""")
    return df.rename(columns={"loss_auc": "loss_auc_change"})


RATIO_BOUNDS = {"circuit_ratio": (0.0, np.inf), "seconds_ratio": (0.0, np.inf)}  # a cost is never negative
CLOSENESS_BOUNDS = {"kl_forget": (0.0, np.inf), "kl_test": (0.0, np.inf), "js_forget": (0.0, 1.0),
                    "js_test": (0.0, 1.0), "forget_quality": (0.0, 1.0), "privleak": (-1.0, np.inf)}


def forget_confusion_mean(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of `forget_confusion`'s shares; a digit a seed never predicts counts as 0 there."""
    if cells.empty:
        return cells
    keys = ["model", "forget", "method"]
    n = cells.groupby(keys)["seed"].nunique().rename("n_seeds")
    out = cells.groupby(keys + ["prediction"], as_index=False)["share"].sum().join(n, on=keys)
    out["share"] = out["share"] / out["n_seeds"]
    return out


def collateral_cells(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """Per cell and test-set class: accuracy of the unlearned model minus that of the matching `retrain` cell
    (same samples). Forgotten classes are left out (their change is the point, not collateral)."""
    keys = ", ".join(f"c.{a}" for a in AXES)
    return s.df(f"""
      WITH sel AS (SELECT * FROM cell_all c WHERE {where_clause(filters, 'c')} AND c.method <> 'retrain'
                                                 AND c.retrain_cell_id IS NOT NULL)
      SELECT {keys.replace('c.', 'sel.')}, e.label, count(*) AS n,
             avg((e.prediction = e.label)::DOUBLE) - avg((r.prediction = r.label)::DOUBLE) AS acc_change
      FROM sel JOIN examples e ON e.cell_id = sel.cell_id
               JOIN examples r ON r.cell_id = sel.retrain_cell_id AND r.split = 'test'
                              AND r.sample_index = e.sample_index
      WHERE e.split = 'test' AND NOT (sel.forget LIKE 'class:%'
                                      AND e.label = TRY_CAST(split_part(sel.forget, ':', 2) AS BIGINT))
      GROUP BY ALL""")


def forget_confusion(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """For class forget sets: the share of the forget set (training samples of the class) predicted as each
    digit, per cell (every method, `retrain` included)."""
    keys = ", ".join(f"c.{a}" for a in AXES)
    return s.df(f"""
      WITH sel AS (SELECT * FROM cell_ci c WHERE {where_clause(filters, 'c')} AND c.forget LIKE 'class:%'),
      n AS (SELECT cell_id, count(*) AS n FROM examples WHERE split = 'train_forget' GROUP BY cell_id)
      SELECT {keys}, e.prediction, count(*) / any_value(n.n) AS share
      FROM sel c JOIN examples e ON e.cell_id = c.cell_id AND e.split = 'train_forget' JOIN n ON n.cell_id = c.cell_id
      GROUP BY ALL""")


def cost_ratio_cells(s: Store, filters: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """Per cell: its unlearning cost over its matching `retrain` cell's (whose unlearn stage is the training
    from scratch), in device circuits where recorded, else in the circuits the simulator ran; plus the ratio of
    wall seconds. Returns (rows, which circuit count was used)."""
    device = s.has("unlearn_circuits_device")
    num, den = (("unlearn_circuits_device", "retrain_unlearn_circuits_device") if device
                else ("unlearn_circuits", "retrain_unlearn_circuits"))
    keys = ", ".join(f"c.{a}" for a in AXES)
    df = s.df(f"""
      SELECT {keys}, c.{num} / nullif(c.{den}, 0) AS circuit_ratio,
             c.unlearn_seconds / nullif(c.retrain_unlearn_seconds, 0) AS seconds_ratio
      FROM cell_all c WHERE {where_clause(filters, 'c')} AND c.retrain_cell_id IS NOT NULL
        AND c.method NOT IN ('none', 'retrain')""")
    return df, ("device circuits (`unlearn_circuits_device`)" if device else
                "simulator circuit executions (`unlearn_circuits`; this store has no `unlearn_circuits_device`)")


def pareto_cells(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """Per (model, forget, method): seed means with intervals of the strongest attack's TPR@1%FPR, retained-class
    test accuracy, U-LiRA's accuracy where it ran, and the device-cost ratio to retrain (seed mean)."""
    by = ["model", "forget", "method"]
    tprs = [f"{p}_tpr_at_1pct_fpr" for p in ROC_ATTACKS if f"{p}_tpr_at_1pct_fpr" in METRICS]
    extra = [m for m in ("ulira_accuracy",) if m in METRICS and s.has(m)]
    aucs = [f"{p}_auc" for p in ROC_ATTACKS if f"{p}_auc" in METRICS]  # `strongest` reads an attack only with its AUC
    agg = aggregate(s, by, filters, metrics=[m for m in (*tprs, *aucs) if s.has(m)] + ["acc_test_retain", *extra])
    if agg.empty:
        return agg
    best = strongest(agg)
    keep = [f"{m}{x}" for m in ("acc_test_retain", *extra) for x in ("", "_lo", "_hi") if f"{m}{x}" in agg]
    out = pd.concat([best.reset_index(drop=True), agg[keep].reset_index(drop=True)], axis=1)
    ratio, _ = cost_ratio_cells(s, filters)
    if not ratio.empty:
        r = ratio.groupby(by, dropna=False, sort=False)["circuit_ratio"].mean().reset_index()
        out = out.merge(r, on=by, how="left")
        out.loc[out["method"] == "retrain", "circuit_ratio"] = 1.0  # the yardstick itself
    return out


def trajectories(s: Store, filters: dict[str, Any]) -> pd.DataFrame:
    """The logged unlearning trajectories (one per unlearn stage, so one per model, forget, method, seed and
    shots), as long rows: model, forget, method, seed, step, forget_acc, retain_acc, test_acc, loss_auc."""
    import json

    if not s.has("unlearn_trajectory"):
        return pd.DataFrame()
    raw = s.df(f"""SELECT model, forget, method, seed, any_value(unlearn_trajectory) AS t FROM cell_ci c
                   WHERE {where_clause(filters, 'c')} AND unlearn_trajectory IS NOT NULL GROUP BY ALL
                   ORDER BY ALL""")
    rows = []
    for r in raw.itertuples(index=False):
        try:
            points = json.loads(r.t)
        except (TypeError, ValueError):
            continue
        for pnt in points if isinstance(points, list) else []:
            if isinstance(pnt, dict) and "step" in pnt:
                rows.append({"model": r.model, "forget": r.forget, "method": r.method, "seed": r.seed,
                             **{k: pnt.get(k) for k in ("step", "forget_acc", "retain_acc", "test_acc", "loss_auc")}})
    return pd.DataFrame(rows)


def strongest(df: pd.DataFrame) -> pd.DataFrame:
    """Per row of an aggregate, the attack with the highest AUC and the one with the highest TPR at 1% FPR
    (a privacy audit reads the strongest attacker), each named, with its value and interval."""
    out = []
    for _, r in df.iterrows():
        found = {p: (r.get(f"{p}_auc"), r.get(f"{p}_tpr_at_1pct_fpr")) for p in ROC_ATTACKS
                 if f"{p}_auc" in r and pd.notna(r.get(f"{p}_auc"))}
        best = {}
        for i, kind in enumerate(("auc", "tpr_at_1pct_fpr")):
            vals = {p: v[i] for p, v in found.items() if pd.notna(v[i])}
            p = max(vals, key=lambda k: vals[k]) if vals else None
            best[kind] = (ROC_ATTACKS[p] if p else None, f"{p}_{kind}" if p else None)
        row = {k: r[k] for k in r.index if k in AXES or k == "n_seeds"}
        for kind, (name, col) in best.items():
            row[f"best_{kind}_attack"] = name
            for x in ("", "_lo", "_hi"):
                row[f"best_{kind}{x}"] = r.get(f"{col}{x}") if col else None
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------ U-LiRA pooled
def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """The empirical ROC's largest TPR at a threshold whose FPR is at most `fpr` (flag: score above it)."""
    neg = np.sort(neg)[::-1]
    k = int(np.floor(fpr * len(neg) + 1e-9))  # false positives allowed
    return 1.0 if k >= len(neg) else float(np.mean(pos > neg[k]))


POOLED_BOOT = 2000  # hierarchical bootstrap resamples of a pooled U-LiRA TPR


def ulira_pooled(s: Store, filters: dict[str, Any], fpr: float = 0.01, n_boot: int = POOLED_BOOT) -> pd.DataFrame:
    """Per model x forget x method: U-LiRA's TPR at `fpr` with the forget samples of every seed pooled (each
    seed's 50 retrained scores cannot resolve 1%; three seeds' 150 can), as Hayes et al. pool target models.
    95% interval: hierarchical bootstrap (seeds with replacement, then forget samples within each, score
    pairs kept together), never narrower than the Wilson interval of the pooled positives. NULL where the
    pooled negatives cannot resolve `fpr` (fewer than 1/fpr)."""
    if not s.has(*ULIRA_PAIR):
        return pd.DataFrame()
    df = s.df(f"""
      SELECT c.model, c.forget, c.method, c.seed, e.ulira_score AS pos, e.ulira_score_retrained AS neg
      FROM examples e JOIN cell_ci c ON c.cell_id = e.cell_id
      WHERE {where_clause(filters, "c")} AND e.split = 'train_forget'
        AND e.ulira_score IS NOT NULL AND NOT isnan(e.ulira_score)
        AND e.ulira_score_retrained IS NOT NULL AND NOT isnan(e.ulira_score_retrained)""")
    resolved = s.df(f"""SELECT model, forget, method, count(ulira_tpr_at_1pct_fpr) AS n_resolved FROM cell_ci c
                         WHERE {where_clause(filters, "c")} GROUP BY ALL""")
    df = df.merge(resolved, on=["model", "forget", "method"])
    rows = []
    for (model, forget, method, n_res), g in df.groupby(["model", "forget", "method", "n_resolved"], sort=False):
        seeds = [(x.pos.to_numpy(), x.neg.to_numpy()) for _, x in g.groupby("seed")]
        pos, neg = g.pos.to_numpy(), g.neg.to_numpy()
        row = {"model": model, "forget": forget, "method": method, "n_seeds": len(seeds), "n_pooled": len(pos),
               "n_resolved": int(n_res),
               "pooled_fpr_floor": 1 / len(neg), "ulira_pooled_tpr": None, "ulira_pooled_tpr_lo": None,
               "ulira_pooled_tpr_hi": None}
        if 1 / len(neg) <= fpr + 1e-12:
            tpr = tpr_at_fpr(pos, neg, fpr)
            boot = _bootstrap_tpr(seeds, fpr, n_boot)
            w_lo, w_hi = s.con.execute("SELECT wilson_lo($1, $2), wilson_hi($1, $2)", [tpr, len(pos)]).fetchone()
            row.update(ulira_pooled_tpr=tpr, ulira_pooled_tpr_lo=min(w_lo, np.percentile(boot, 2.5)),
                       ulira_pooled_tpr_hi=max(w_hi, np.percentile(boot, 97.5)))
        rows.append(row)
    return _order(pd.DataFrame(rows), ["model", "forget", "method"]) if rows else pd.DataFrame()


def _bootstrap_tpr(seeds: list[tuple[np.ndarray, np.ndarray]], fpr: float, n_boot: int) -> np.ndarray:
    rng = np.random.default_rng(0)  # a report rebuilt from the same store prints the same interval
    out = np.empty(n_boot)
    for b in range(n_boot):
        picked = [seeds[i] for i in rng.integers(len(seeds), size=len(seeds))]
        idx = [rng.integers(len(p), size=len(p)) for p, _ in picked]
        out[b] = tpr_at_fpr(np.concatenate([p[i] for (p, _), i in zip(picked, idx)]),
                            np.concatenate([n[i] for (_, n), i in zip(picked, idx)]), fpr)
    return out
