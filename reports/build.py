"""`qmu report`: report.html (self-contained, figures embedded), report.md and figures/*.png + .svg.

    build_report(results, out, grid=None, compare=None) -> Path of report.html
    main(["--results", DIR, "--out", DIR, "--grid", NAME, "--compare", A, B]) -> exit code (0 ok, 2 bad input)

Everything is read through `reports.queries` (DuckDB SQL over the store); this module only lays it out.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import queries as q


class ReportError(ValueError):
    """Bad input to the report (unknown grid, unknown compare side)."""


# ------------------------------------------------------------------------------------------------ formatting
def _isnull(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def fmt(v: Any, digits: int = 3) -> str:
    return "—" if _isnull(v) else f"{v:.{digits}f}"


def fmt_ci(r: pd.Series | dict, m: str, digits: int = 3) -> str:
    v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
    if _isnull(v):
        return "—"
    s = f"{v:+.{digits}f}" if m.startswith("gap_") else f"{v:.{digits}f}"
    return s + q.interval_text(None if _isnull(lo) else lo, None if _isnull(hi) else hi, digits - 1)


def fmt_p(r: pd.Series | dict, m: str) -> str:
    """A p-value (spans many decades) with its interval, in 2 significant digits."""
    v, lo, hi = r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")
    if _isnull(v):
        return "—"
    return f"{v:.2g}" + ("" if _isnull(lo) or _isnull(hi) else f" [{lo:.2g}, {hi:.2g}]")


def fmt_count(v: Any) -> str:
    if _isnull(v):
        return "—"
    v = float(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}" if v != int(v) else f"{int(v)}"


def fmt_s(v: Any) -> str:
    return "—" if _isnull(v) else (f"{v:.2f} s" if v < 10 else f"{v:.1f} s" if v < 1000 else f"{v / 60:.1f} min")


def shots(v: Any) -> str:
    return "exact" if _isnull(v) else f"{int(v)}"


def describe_slice(ref: dict[str, Any]) -> str:
    parts = [f"forget {ref.get('forget')}"] if "forget" in ref else []
    parts += [f"{a.replace('_', ' ')} {shots(ref[a])}" for a in q.SHOT_AXES if a in ref]
    if ref.get("backend"):
        parts.append(f"backend {ref['backend']}")
    return ", ".join(parts)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    collapsed: bool = False
    wrap: bool = False  # long text cells wrap (default: numbers stay on one line)
    marks: list[str] = field(default_factory=list)  # per row, a CSS class for the cell in column `mark_col`
    mark_col: int = -1
    css: str = ""  # the table's own CSS class

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |\n|" + "|".join("---" for _ in self.columns) + "|\n"
        body = "".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n" for r in self.rows)
        out = head + body
        if self.collapsed:
            out = f"<details><summary>{self.title} ({len(self.rows)} rows)</summary>\n\n{out}\n</details>\n"
        else:
            out = f"**{self.title}**\n\n{out}"
        return out + (f"\n{self.note}\n" if self.note else "")

    def html(self) -> str:
        th = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        col = self.mark_col % len(self.columns) if self.columns else 0

        def td(i: int, j: int, c: str) -> str:
            cls = f' class="{self.marks[i]}"' if j == col and i < len(self.marks) and self.marks[i] else ""
            return f"<td{cls}>{_inline_html(c)}</td>"
        trs = "".join("<tr>" + "".join(td(i, j, c) for j, c in enumerate(r)) + "</tr>" for i, r in enumerate(self.rows))
        names = " ".join(x for x in ("wrap" if self.wrap else "", self.css) if x)
        cls = f' class="{names}"' if names else ""
        t = f'<div class="tw"><table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'
        note = f'<p class="note">{_inline_html(self.note)}</p>' if self.note else ""
        if self.collapsed:
            return f"<details><summary>{_inline_html(self.title)} ({len(self.rows)} rows)</summary>{t}{note}</details>"
        return f"<h4>{_inline_html(self.title)}</h4>{t}{note}"


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text (markdown-ish backticks allowed)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)  # (Figure meta dict) or Skipped


# ------------------------------------------------------------------------------------------------ tables
METRIC_COLS = [
    ("advantage [95% CI]", lambda r: fmt_ci(r, "mia_advantage")),
    ("AUC [95% CI]", lambda r: fmt_ci(r, "mia_auc")),
    ("TPR@1%FPR", lambda r: fmt(r.get("mia_tpr_at_1pct_fpr"))),
    ("FPR floor", lambda r: fmt(r.get("mia_fpr_floor"), 4)),
    ("MIA success, study [95% CI]", lambda r: fmt_ci(r, "mia_success")),
    ("its flag rate, unseen non-members", lambda r: fmt_ci(r, q.STUDY_FLAG_RATE)),
    ("acc train retain", lambda r: fmt_ci(r, "acc_train_retain")),
    ("acc train forget", lambda r: fmt_ci(r, "acc_train_forget")),
    ("acc test retain", lambda r: fmt_ci(r, "acc_test_retain")),
    ("acc test forget", lambda r: fmt_ci(r, "acc_test_forget")),
]


def metric_cols() -> list[tuple[str, Any]]:
    """METRIC_COLS with every other attack's AUC after the study's number (the attacks of the store's catalog)."""
    others = [m for m, (_, kind, _) in q.METRICS.items() if kind == "auc" and m != "mia_auc"]
    aucs = [(q.METRICS[m][0], lambda r, m=m: fmt(r.get(m))) for m in others]
    return METRIC_COLS[:6] + aucs + METRIC_COLS[6:]


STRONGEST_COLS = [
    ("strongest by AUC", lambda r: str(r.get("best_auc_attack") or "—")),
    ("its AUC [95% CI]", lambda r: fmt_ci(r, "best_auc")),
    ("strongest by TPR@1%FPR", lambda r: str(r.get("best_tpr_at_1pct_fpr_attack") or "—")),
    ("its TPR@1%FPR [95% CI]", lambda r: fmt_ci(r, "best_tpr_at_1pct_fpr")),
]
GAP_COST_COLS = [
    ("Δ advantage vs retrain", lambda r: fmt_ci(r, "gap_mia_advantage")),
    ("Δ AUC vs retrain", lambda r: fmt_ci(r, "gap_mia_auc")),
    ("Δ MIA success (study) vs retrain", lambda r: fmt_ci(r, "gap_mia_success")),
    ("Δ acc test retain vs retrain", lambda r: fmt_ci(r, "gap_acc_test_retain")),
    ("Δ acc train forget vs retrain", lambda r: fmt_ci(r, "gap_acc_train_forget")),
    ("unlearn s", lambda r: fmt_s(r.get("unlearn_seconds"))),
    ("unlearn circuits", lambda r: fmt_count(r.get("unlearn_circuits"))),
    ("unlearn device circuits", lambda r: fmt_count(r.get("unlearn_circuits_device"))),
    ("relearn steps", lambda r: fmt(r.get("relearn_steps"), 0)),
    ("shots total", lambda r: fmt_count(r.get("shots_total"))),
    ("train s", lambda r: fmt_s(r.get("train_seconds"))),
]


def metric_table(df: pd.DataFrame, keys: Sequence[str], title: str, note: str = "", collapsed: bool = False,
                 columns: Sequence[tuple[str, Any]] | None = None, labels: dict[str, str] | None = None) -> Table:
    columns = list(columns) if columns is not None else metric_cols() + GAP_COST_COLS
    cells = [[f(r) for _, f in columns] for _, r in df.iterrows()]
    # a metric this store never recorded (older code) is left out rather than shown as a column of dashes
    keep = [j for j in range(len(columns)) if not cells or any(row[j] != "—" for row in cells)]
    cols = [k.replace("_", " ") for k in keys] + ["seeds"] + [columns[j][0] for j in keep]
    rows = []
    for (_, r), vals in zip(df.iterrows(), cells):
        kv = [shots(r[k]) if k in q.SHOT_AXES else (labels or {}).get(r[k], str(r[k])) if k == "model" else str(r[k])
              for k in keys]
        rows.append(kv + [str(int(r["n_seeds"]))] + [vals[j] for j in keep])
    return Table(title, cols, rows, note, collapsed)


# ------------------------------------------------------------------------------------------------ one grid
@dataclass
class GridReport:
    grid: str
    sections: list[Section]
    headline: pd.DataFrame
    counts: dict[str, int]


def _note_seeds(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    n = sorted(set(int(x) for x in df["n_seeds"]))
    return f"Seeds per point: {', '.join(map(str, n))}."


def grid_report(s: q.Store, grid: str, figdir: Path, prefix: str, fig_meta: list[dict]) -> GridReport:
    from . import figures as F

    counts = q.status_counts(s, grid)
    vals = q.axis_values(s, grid)
    all_vals = q.axis_values(s, grid, ok_only=False)
    ref = q.reference_slice(s, grid)
    prov = q.provenance(s, grid)
    g = {"grid": grid}
    secs: list[Section] = []

    # ---- status and what is missing
    st = Section(f"Grid `{grid}`: status")
    st.tables.append(Table("Cells", ["total", "ok", "failed", "budget_skipped", "pending"],
                           [[str(counts["total"]), str(counts["ok"]), str(counts["failed"]),
                             str(counts["budget_skipped"]), str(counts["pending"])]],
                           "pending = listed in the grid's latest run manifest but without a stored row"
                           + ("" if s.has_manifests else " (no manifest in this store: pending unknown)") + "."))
    axes_txt = "; ".join(f"{a}: {', '.join(shots(v) if a in q.SHOT_AXES else str(v) for v in all_vals[a])}"
                         for a in q.AXES)
    st.paragraphs.append(f"Axes seen: {axes_txt}.")
    st.paragraphs.append(f"Code {prov['code_version']}; hosts {prov['hosts']}; cells finished {prov['first']} to "
                         f"{prov['last']}.")
    miss = []
    if counts["ok"] == 0:
        miss.append("No cell of this grid finished ok: there is nothing to plot.")
    if counts["pending"]:
        miss.append(f"{counts['pending']} cell(s) pending (not yet run or interrupted): numbers below use the "
                    f"{counts['ok']} ok cell(s) only.")
    if counts["failed"] or counts["budget_skipped"]:
        miss.append(f"{counts['failed']} failed and {counts['budget_skipped']} budget-skipped cell(s) are excluded; "
                    "their errors are listed below.")
    absent = [m for m in all_vals["method"] if m not in vals["method"]]  # asked for by the grid, none ok
    if absent:
        miss.append(f"Methods with no ok cell: {', '.join(absent)}.")
    if "retrain" not in vals["method"]:
        miss.append("No ok `retrain` cell: gaps to retrain are not available.")
    miss += untrained_models(s, grid, ref)
    holes = q.missing_combinations(s, grid)
    if holes and counts["ok"]:
        miss.append(f"{holes} combination(s) of the axis values above have no ok cell.")
    single = [a for a in q.AXES if len(vals[a]) <= 1]
    if single:
        miss.append("Single-valued axes (no figure against them): " + ", ".join(
            f"{a} = {shots(vals[a][0]) if a in q.SHOT_AXES else vals[a][0]}" if vals[a] else a for a in single) + ".")
    st.bullets = miss or ["Nothing missing: every cell of the latest run is stored and ok."]
    circuits = q.circuit_models(s, grid)
    if not circuits.empty:
        st.tables.append(Table("Circuit models", ["model", "circuit hash", "qubits", "parameters", "depth",
                                                  "two-qubit gates"],
                               [[str(r.model), str(r.circuit_hash) + (" (and others: the circuit changed between runs)"
                                                                      if r.n_hashes > 1 else ""),
                                 *(str(int(v)) for v in (r.circuit_qubits, r.circuit_parameters, r.circuit_depth,
                                                         r.circuit_two_qubit_gates))]
                                for r in circuits.itertuples()],
                               "A user's circuit (models: in the grid), named in the tables below with the first 8 hex "
                               "digits of the hash of its QPY bytes."))
    labels = q.model_labels(circuits)
    fails = q.failures(s, grid)
    if not fails.empty:
        st.tables.append(Table("Failed / skipped cells by error", ["status", "error (first line)", "cells", "methods",
                                                                   "models"],
                               [[str(x) for x in r] for r in fails.itertuples(index=False)]))
    secs.append(st)
    if counts["ok"] == 0:
        return GridReport(grid, secs, pd.DataFrame(), counts)

    # ---- headline table
    head = q.headline_table(s, grid, ref)
    ts = Section(f"Grid `{grid}`: results per method × model")
    ts.paragraphs.append(f"Reference slice: {describe_slice(ref)}. Means over seeds with 95% intervals "
                         "(t over seeds with 2 or more, never narrower than the cells' own Wilson / Hanley-McNeil intervals; "
                         "one seed: the cell's own). Δ = "
                         "difference to `retrain` with the same model, forget set, shots, seed and backend.")
    touched = methods_table(s.root, grid, vals["method"])
    if touched is not None:
        ts.tables.append(touched)
    ts.tables.append(metric_table(head, ["model", "method"], "Leakage and utility per method × model",
                                  columns=metric_cols(), labels=labels))
    ts.tables.append(metric_table(q.strongest(head), ["model", "method"], "Strongest attack per method × model",
                                  "The leakage headline: of every membership attack this grid ran, the one with "
                                  "the highest AUC and the one with the highest TPR at 1% FPR (NULL where the "
                                  "scored non-members cannot resolve 1%); every attack stays in the table above.",
                                  columns=STRONGEST_COLS, labels=labels))
    ulira = ulira_table(s, grid, ref, labels)
    if ulira is not None:
        ts.tables.append(ulira)
    ts.tables.append(metric_table(head, ["model", "method"], "Closeness to retrain and cost per method × model",
                                  _note_seeds(head) + " Costs are per cell (unlearn s of retrain = its training "
                                  "from scratch).", columns=GAP_COST_COLS, labels=labels))
    allg = q.aggregate(s, list(q.GROUP_AXES), g)
    if len(allg) > len(head):
        ts.tables.append(metric_table(allg, list(q.GROUP_AXES), "Every combination of axes (all slices)",
                                      collapsed=True))
    secs.append(ts)

    # ---- figures
    fs = Section(f"Grid `{grid}`: figures")
    F.setup()
    no_ref_forget = {k: v for k, v in ref.items() if k != "forget"}
    out: list[Any] = []
    d = q.aggregate(s, ["forget", "model", "method"], {**g, **no_ref_forget})
    out.append(F.fig_leakage(d, _note_seeds(d) + f" Slice: {describe_slice(no_ref_forget)}."))
    lm = "mia_auc"
    for axis, name, title, mets in (
        ("eval_shots", "shot_shield", "Shot shield: leakage and accuracy against inference shots",
         (lm, "mia_success", "acc_test_retain")),
        ("unlearn_shots", "unlearn_shots", "Unlearning under shot noise",
         (lm, "acc_train_forget", "acc_test_retain")),
        ("train_shots", "train_shots", "Training under shot noise", (lm, "mia_success", "acc_test_retain")),
    ):
        others = {k: v for k, v in ref.items() if k != axis}
        d = q.aggregate(s, ["model", "method", axis], {**g, **others})
        f = F.fig_shots(d, axis, mets, name, title, _note_seeds(d) + f" Slice: {describe_slice(others)}.")
        if axis == "train_shots" and isinstance(f, F.Skipped):
            continue  # not a requested figure; only shown when the grid varies it
        out.append(f)
    d = q.aggregate(s, ["forget", "model", "method"], {**g, **no_ref_forget})
    out.append(F.fig_forget(d, (F.leak_metric(d), "mia_success", "acc_test_retain"), _note_seeds(d)))
    r = q.roc(s, ["model", "method"], {**g, **ref})
    out.append(F.fig_roc(r, f"Slice: {describe_slice(ref)}.", s.has("population")))
    c = q.aggregate(s, ["model", "method"], {**g, **ref})
    ratio_cells, ratio_what = q.cost_ratio_cells(s, {**g, **ref})
    ratio = q.seed_mean(ratio_cells, ["model", "method"], list(q.RATIO_BOUNDS), q.RATIO_BOUNDS) \
        if not ratio_cells.empty else ratio_cells
    out.append(F.fig_cost(c, ratio, ratio_what, _note_seeds(c)))
    for f in out:
        _add_figure(fs, f, prefix, figdir, fig_meta)
    secs.append(fs)
    secs.append(retrain_section(s, grid, ref, prefix, figdir, fig_meta))
    return GridReport(grid, secs, head, counts)


CHANCE_MARGIN = 0.1  # above 1/classes: an original model this close to chance has learned nothing to leak


def untrained_models(s: q.Store, grid: str, ref: dict[str, Any]) -> list[str]:
    """A warning per model whose original model (`none`) is at chance on the retained classes' test set: its
    leakage and unlearning numbers then say nothing about either."""
    if not s.has("acc_test_retain"):
        return []
    df = q.aggregate(s, ["model"], {"grid": grid, **ref, "method": "none"}, metrics=["acc_test_retain"])
    chance = 1 / 10  # the ten digits of both datasets
    return [f"The original {r.model} is at chance (retained-class test accuracy {r.acc_test_retain:.3f}, chance "
            f"{chance:.2f}): it learned nothing to leak or to unlearn, so its numbers below say nothing; train it "
            f"longer (`params: {{{r.model}: {{epochs: N}}}}`)."
            for r in df.itertuples() if not _isnull(r.acc_test_retain) and r.acc_test_retain < chance + CHANCE_MARGIN]


def ulira_table(s: q.Store, grid: str, ref: dict[str, Any], labels: dict[str, str]) -> Table | None:
    """U-LiRA per model x forget set x method: accuracy and AUC over seeds, and the TPR at 1% FPR per seed
    and pooled over seeds (a seed's forget set alone rarely has the 100 retrained scores 1% needs)."""
    filt = {"grid": grid, **{k: v for k, v in ref.items() if k != "forget"}}
    pooled = q.ulira_pooled(s, filt)
    if pooled.empty:
        return None
    agg = q.aggregate(s, ["model", "forget", "method"], filt).merge(
        pooled.drop(columns="n_seeds"), on=["model", "forget", "method"])
    def per_seed(r: pd.Series) -> str:
        if r.n_resolved == r.n_seeds:
            return fmt_ci(r, "ulira_tpr_at_1pct_fpr")
        return f"NULL in {int(r.n_seeds - r.n_resolved)} of {int(r.n_seeds)} seeds"
    rows = [[labels.get(r.model, str(r.model)), str(r.forget), str(r.method), str(int(r.n_seeds)),
             fmt_ci(r, "ulira_accuracy"), fmt_ci(r, "ulira_auc"), per_seed(r),
             fmt_ci(r, "ulira_pooled_tpr") if not _isnull(r.ulira_pooled_tpr) else "NULL",
             f"{int(r.n_pooled)} / {fmt(r.pooled_fpr_floor, 4)}"] for _, r in agg.iterrows()]
    return Table("U-LiRA: unlearned, or retrained? per model × forget set × method",
                 ["model", "forget", "method", "seeds", "accuracy [95% CI]", "AUC [95% CI]",
                  "TPR@1%FPR per seed", "TPR@1%FPR, seeds pooled [95% CI]", "pooled forget samples / FPR floor"],
                 rows, "Accuracy 0.5: the attacker cannot tell the unlearned model from one retrained without the "
                 "forget set (`retrain` should sit there, `none` above it). A seed's TPR at 1% FPR is NULL where its "
                 "retrained scores (one per forget sample) number under 100. Pooled: every seed's forget samples "
                 "scored together, as U-LiRA pools target models; its interval is a hierarchical bootstrap (seeds, "
                 f"then samples within them, {q.POOLED_BOOT:,} resamples), never narrower than the pooled Wilson "
                 "interval. "
                 f"Slice: {describe_slice({k: v for k, v in ref.items() if k != 'forget'})}.")


def methods_table(root: str, grid: str, methods: Sequence[str]) -> Table | None:
    """What each method of the grid does and which parameter groups it changes, as the run's catalog (the
    workload's method registry, in the manifest) declares; None for a store whose manifest has no catalog."""
    from harness.store import ResultStore

    cat = ((ResultStore(root).manifest(grid) or {}).get("catalog") or {}).get("methods") or {}
    rows = [[m, str(cat[m].get("summary", "")), ", ".join(cat[m].get("touches") or []) or "nothing",
             "yes" if cat[m].get("stops") else "no"] for m in methods if m in cat]
    if not rows:
        return None
    return Table("Methods: what each does and which parameter groups it changes",
                 ["method", "what it does", "parameter groups changed", "stops on a rule"], rows,
                 "Parameter groups: `front end` = the classical layers before the circuit, `angles` = the circuit's "
                 "rotation angles, `head` = the classical read-out layer. A method that leaves a group untouched "
                 "keeps the original model's values there. These are the defaults the run's code declares; a grid's "
                 "`params` can widen them (e.g. `ssd`'s `dampen_quantum` also dampens the angles).", wrap=True)


def _add_figure(sec: Section, f: Any, prefix: str, figdir: Path, fig_meta: list[dict]) -> None:
    from . import figures as F

    if isinstance(f, F.Figure):
        f.name = prefix + f.name
    sec.figures.append(_place(f, figdir, fig_meta))


def retrain_section(s: q.Store, grid: str, ref: dict[str, Any], prefix: str, figdir: Path,
                    fig_meta: list[dict]) -> Section:
    """Closeness to retrain, collateral damage, relearning and the unlearning trajectories: each part is
    skipped, with a line saying why, where the store lacks the columns it needs."""
    from . import figures as F

    sec = Section(f"Grid `{grid}`: against retrain")
    filt = {"grid": grid, **ref}
    has_retrain = bool(s.con.execute(f"SELECT count(*) FROM cell_ci WHERE {q.where_clause({**filt, 'method': 'retrain'})}")
                       .fetchone()[0])
    sec.paragraphs.append(f"Slice: {describe_slice(ref)}. Every method is compared with the `retrain` cell of the same "
                          "model, forget set, shots, seed and backend, on the same samples; means over seeds with "
                          "95% t intervals (scipy.stats.t).")
    if not has_retrain:
        sec.bullets.append("No ok `retrain` cell at this slice: nothing to compare with.")
        return sec
    # closeness
    if not s.has(*q.PROB_COLUMNS):
        sec.bullets.append("Closeness to retrain (KL, Jensen-Shannon distance, loss KS, privleak) is skipped: this "
                           "store's examples have no `prob_0`..`prob_9` columns (written by an older version of the "
                           "code).")
    else:
        cc = q.closeness_cells(s, filt)
        cols = ["kl_forget", "kl_test", "js_forget", "js_test", "privleak"]
        agg = q.seed_mean(cc, ["model", "forget", "method"], cols, q.CLOSENESS_BOUNDS) if not cc.empty else cc
        if not agg.empty:
            agg = with_loss_ks(agg, s, grid, ref)
            sec.tables.append(Table(
                "Closeness to retrain", ["model", "forget", "method", "seeds", "KL forget", "KL test", "JS forget",
                                         "JS test", "privleak", "loss KS statistic", "loss KS p (Fisher)"],
                [[str(r["model"]), str(r["forget"]), str(r["method"]), str(int(r["n_seeds"]))]
                 + [fmt_ci(r, m) for m in cols] + [fmt(r.get("loss_ks")), fmt_p(r, "forget_quality")]
                 for _, r in agg.iterrows()],
                "KL = mean KL(unlearned ‖ retrain) of the output probabilities (nats); JS = mean Jensen-Shannon "
                "distance (base 2, 0..1); privleak = (AUC − AUC_retrain) / AUC_retrain of the held-out attack; "
                "loss KS = two-sample KS test of the per-example forget-set losses against retrain's, per seed: the "
                "statistic's mean over seeds, and the seeds' p-values combined by Fisher's method (never averaged; "
                "not TOFU's truth-ratio test, see docs/metrics.md)."))
        floor = floor_section(sec, s, filt)
        at_ref = lambda df: df[df["forget"] == ref.get("forget")] if not df.empty else df  # noqa: E731
        from . import verdict_report as VR

        stopped = VR.stopped_at(s, grid, ref)
        _add_figure(sec, F.fig_closeness(at_ref(agg), "", at_ref(floor), stopped), prefix, figdir, fig_meta)
    # leakage against accuracy and cost, every forget set of the slice
    no_forget = {k: v for k, v in filt.items() if k != "forget"}
    _add_figure(sec, F.fig_pareto(q.pareto_cells(s, no_forget), ""), prefix, figdir, fig_meta)
    # collateral damage (class forget sets)
    if not str(ref.get("forget", "")).startswith("class:"):
        sec.bullets.append("Collateral damage is skipped: the reference forget set is not a class.")
    else:
        ch = q.collateral_cells(s, filt)
        change = q.seed_mean(ch, ["model", "method", "label"], ["acc_change"]) if not ch.empty else ch
        cf = q.forget_confusion(s, filt)
        conf = q.forget_confusion_mean(cf)
        _add_figure(sec, F.fig_collateral(change, conf, ""), prefix, figdir, fig_meta)
    # relearning
    if not s.has("relearn_steps"):
        sec.bullets.append("Relearning robustness is skipped: this store has no `relearn_steps` column.")
    else:
        rl = q.aggregate(s, ["model", "forget", "method"], filt, metrics=["relearn_steps"])
        sec.tables.append(Table("Relearning: fine-tuning steps on a tenth of the forget set until its accuracy "
                                "recovers to half of the original model's",
                                ["model", "forget", "method", "seeds", "relearn steps [95% CI]"],
                                [[str(r["model"]), str(r["forget"]), str(r["method"]), str(int(r["n_seeds"])),
                                  fmt_ci(r, "relearn_steps", 1)] for _, r in rl.iterrows()],
                                "— = NULL in every seed: the forget set did not recover within the bound, or relearning "
                                "did not apply (`relearn_applicable` false: the original model never learned the "
                                "forget set better than unseen data, so there is nothing to relearn). A method that truly "
                                "forgot relearns about as slowly as `retrain`."))
    # trajectories
    if not s.has("unlearn_trajectory"):
        sec.bullets.append("Unlearning trajectories are skipped: this store has no `unlearn_trajectory` column.")
    else:
        no_eval = {k: v for k, v in filt.items() if k not in ("eval_shots", "backend")}
        _add_figure(sec, F.fig_trajectory(q.trajectories(s, no_eval), ""), prefix, figdir, fig_meta)
    return sec


FLOOR_BOUNDS = {"kl_forget": (0.0, np.inf), "kl_test": (0.0, np.inf), "js_forget": (0.0, 1.0), "js_test": (0.0, 1.0),
                "loss_ks": (0.0, 1.0), "loss_auc_change": (-1.0, 1.0)}


def floor_section(sec: Section, s: q.Store, filt: dict[str, Any]) -> pd.DataFrame:
    """The retrain-to-retrain noise floor table (means over seeds by model and forget set), or a line saying
    how to get one; returns the means for the closeness figure."""
    fc = q.floor_cells(s, filt)
    if fc.empty:
        sec.bullets.append("No noise floor at this slice: no `retrain` cell ran a replica. "
                           "`params: {retrain: {replicas: 2}}` retrains each cell once more from another "
                           "initialisation and stores how far the two retrained models lie apart.")
        return fc
    floor = q.seed_mean(fc, ["model", "forget"], list(FLOOR_BOUNDS), FLOOR_BOUNDS)
    sec.tables.append(Table(
        "Noise floor: one retrained model against another (other initialisation and data order)",
        ["model", "forget", "seeds", "KL forget", "KL test", "JS forget", "JS test", "loss KS statistic",
         "loss-attack AUC change"],
        [[str(r["model"]), str(r["forget"]), str(int(r["n_seeds"]))] + [fmt_ci(r, m) for m in FLOOR_BOUNDS]
         for _, r in floor.iterrows()],
        "How far two equally valid retrained models lie apart on the closeness metrics above. A method is "
        "close to retrain on a metric when its mean lies within this floor (at most its upper 95% bound); "
        "a distance above it is more than retraining itself varies."))
    return floor


def with_loss_ks(agg: pd.DataFrame, s: q.Store, grid: str, ref: dict[str, Any]) -> pd.DataFrame:
    """The closeness rows with the loss KS of each (model, forget set, method) at the reference shots:
    `loss_ks` (mean statistic) and `forget_quality` (the seeds' p-values combined, no interval)."""
    from . import verdict_report as VR

    ks = VR.loss_ks_at(s, grid, {k: x for k, x in ref.items() if k != "forget"})
    cols = ["model", "forget", "method"]
    ks = (ks[cols + ["ks_statistic", "p_combined"]] if not ks.empty else pd.DataFrame(
        columns=cols + ["ks_statistic", "p_combined"])).rename(
        columns={"ks_statistic": "loss_ks", "p_combined": "forget_quality"})
    return agg.merge(ks, on=cols, how="left")


def _compare(s: q.Store, sides: tuple[str, str], grid: str | None) -> tuple[pd.DataFrame, str, str]:
    """`queries.compare` of two different, known sides; run before anything is written."""
    a, b = sides
    if a == b:
        raise ReportError(f"--compare: both sides are {a!r}; name two different grids or backends "
                          f"(grids: {', '.join(q.grids(s))})")
    try:
        return q.compare(s, a, b, grid)
    except ValueError as e:
        raise ReportError(str(e)) from None


def compare_section(compared: tuple[pd.DataFrame, str, str], figdir: Path, fig_meta: list[dict]) -> Section:
    from . import figures as F

    df, da, db = compared
    sec = Section(f"Comparison: {da} against {db}")
    both = df.dropna(subset=["mia_success_a", "mia_success_b"])
    only_a = int(df["mia_success_b"].isna().sum()) if not df.empty else 0
    only_b = int(df["mia_success_a"].isna().sum()) if not df.empty else 0
    sec.paragraphs.append(f"Matched on model, forget, method and shot counts, averaged over seeds: {len(both)} "
                          f"combination(s) on both sides, {only_a} only in {da}, {only_b} only in {db}.")
    keys = list(q.COMPARE_KEYS)
    cols = [k.replace("_", " ") for k in keys] + ["seeds A/B"]
    mets = [("MIA success", "mia_success"), ("its flag rate, unseen non-members", q.STUDY_FLAG_RATE),
            ("AUC", "mia_auc"), ("acc test retain", "acc_test_retain"), ("Δ MIA vs retrain", "gap_mia_success")]
    for lab, _ in mets:
        cols += [f"{lab} A", f"{lab} B", f"{lab} B−A"]
    def rows_of(part: pd.DataFrame) -> list[list[str]]:
        rows = []
        for _, r in part.iterrows():
            row = [shots(r[k]) if k in q.SHOT_AXES else str(r[k]) for k in keys]
            row.append(f"{'—' if _isnull(r['n_seeds_a']) else int(r['n_seeds_a'])}/"
                       f"{'—' if _isnull(r['n_seeds_b']) else int(r['n_seeds_b'])}")
            for _, m in mets:
                ra = {m: r[f"{m}_a"], f"{m}_lo": r[f"{m}_lo_a"], f"{m}_hi": r[f"{m}_hi_a"]}
                rb = {m: r[f"{m}_b"], f"{m}_lo": r[f"{m}_lo_b"], f"{m}_hi": r[f"{m}_hi_b"]}
                row += [fmt_ci(ra, m), fmt_ci(rb, m), "—" if _isnull(r[f"{m}_delta"]) else f"{r[f'{m}_delta']:+.3f}"]
            rows.append(row)
        return rows

    sec.tables.append(Table(f"Matched: A = {da}, B = {db}", cols, rows_of(both),
                            "" if len(both) else "No combination has ok cells on both sides."))
    rest = df.drop(both.index) if not df.empty else df
    if len(rest):
        sec.tables.append(Table("Combinations present on one side only", cols, rows_of(rest), collapsed=True))
    F.setup()
    sec.figures.append(_place(F.fig_compare(df, da, db), figdir, fig_meta))
    return sec


def _place(f: Any, figdir: Path, fig_meta: list[dict]) -> Any:
    """Save a drawn figure and return its metadata (also listed in fig_meta); a skip note passes through."""
    from . import figures as F

    if not isinstance(f, F.Figure):
        return f
    meta = {"name": f.name, "title": f.title, "caption": f.caption, "takeaway": f.takeaway, **F.save(f, figdir)}
    fig_meta.append(meta)
    return meta


# ------------------------------------------------------------------------------------------------ rendering
NOTES = [
    "Definitions of every metric and column: docs/metrics.md and docs/results.md.",
    "MIA success (study protocol) is the fraction of forget-set training samples that the paper's attack (MLP on "
    "13 output features, threshold 0.5, trained on training samples and test samples) flags as member: the "
    "study's number, a recall blind to false positives. The held-out protocol trains the attack on retain-set "
    "members and P_attack non-members and scores the forget set against unseen P_eval non-members: advantage = "
    "recall − non-member flag rate, AUC, TPR at low FPR.",
    "A TPR at an FPR below the floor 1/(number of scored non-members) cannot be resolved and is NULL (—).",
    "Intervals are 95%: across seeds, mean ± t·sd/√n; for a single cell, Wilson for rates (counts from the "
    "examples table) and Hanley-McNeil for AUC; a single cell's gap to retrain combines both cells' standard "
    "errors. Costs of a single cell have no interval.",
    "The loss attack thresholds the per-example cross-entropy (no training). Closeness to retrain uses the "
    "stored output probabilities of each example (prob_0..prob_9), matched on the same samples.",
]


def _inline_html(t: str) -> str:
    """Backticks as code and [text](relative-file) as a link (reports link only to their own files)."""
    import re

    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(t))
    return re.sub(r"\[([^\]]+)\]\(([\w./-]+)\)", r'<a href="\2">\1</a>', t)


def render_md(title: str, meta: list[str], sections: list[Section], out: Path, warn: str = "") -> str:
    lines = [f"# {title}", "", *[f"- {m}" for m in meta], "", *([f"> **Warning:** {warn}", ""] if warn else [])]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [p, ""]
        if sec.bullets:
            lines += [f"- {b}" for b in sec.bullets] + [""]
        for t in sec.tables:
            lines += [t.markdown(), ""]
        for f in sec.figures:
            if isinstance(f, dict):
                rel = Path(f["png"]).relative_to(out).as_posix()
                take = [f"**{f['takeaway']}**", ""] if f.get("takeaway") else []
                lines += [f"### {f['title']}", "", *take, f"![{f['title']}]({rel})", "",
                          f"{f['caption']} ([svg]({Path(f['svg']).relative_to(out).as_posix()}))", ""]
            else:
                lines += [f"### {f.title}", "", f"*Not drawn:* {f.reason}.", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;
padding:0 20px;color:#1d1d1f;line-height:1.45;font-size:14px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:34px}
h3{font-size:16px;margin:22px 0 6px}h4{font-size:14px;margin:14px 0 6px}
.meta{color:#555;font-size:13px;margin:0;padding-left:18px}
.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0}th,td{border:1px solid #d8d8d8;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#f3f4f6;text-align:center}td:first-child,td:nth-child(2){text-align:left}
tbody tr:nth-child(even){background:#fafafa}
table.wrap td{white-space:normal;text-align:left;vertical-align:top}
figure{margin:10px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:13px;max-width:1100px}
.note{color:#555;font-size:12.5px}.take{font-weight:600;margin:4px 0}
.warn{color:#8a1c00;background:#fff0ec;border:1px solid #f0b8a8;padding:6px 10px;border-radius:4px}.skip{color:#8a5300;background:#fff7e6;border:1px solid #f0d9a8;padding:6px 10px;
border-radius:4px}
ul.missing li{margin:2px 0}code{background:#f2f2f2;padding:0 3px;border-radius:3px}
table.verdicts td{text-align:left;font-variant-numeric:tabular-nums}
table.verdicts td:last-child:not([class]){white-space:normal;min-width:10em;max-width:20em}
td.v-eq{background:#d9f2df;color:#0f5323;font-weight:600}td.v-diff{background:#fbdcd5;color:#8a1c00;font-weight:600}
td.v-under{background:#fff1cc;color:#6b4d00}td.v-nd{background:#e3e7ef;color:#2f3a4f}
td.v-stop{background:#eadcf5;color:#4f2277;font-weight:600}
details{margin:8px 0}summary{cursor:pointer;color:#0b57d0}pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
"""


def render_html(title: str, meta: list[str], sections: list[Section], warn: str = "") -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<ul class='meta'>" + "".join(f"<li>{_inline_html(m)}</li>" for m in meta) + "</ul>"]
    if warn:
        parts.append(f"<p class='warn'><b>Warning:</b> {_inline_html(warn)}</p>")
    for sec in sections:
        parts.append(f"<h2>{_inline_html(sec.title)}</h2>")
        parts += [f"<p>{_inline_html(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            parts.append("<ul class='missing'>" + "".join(f"<li>{_inline_html(b)}</li>" for b in sec.bullets) + "</ul>")
        parts += [t.html() for t in sec.tables]
        for f in sec.figures:
            if isinstance(f, dict):
                b64 = base64.b64encode(Path(f["png"]).read_bytes()).decode()
                take = f"<p class='take'>{_inline_html(f['takeaway'])}</p>" if f.get("takeaway") else ""
                parts.append(f"<h3>{html.escape(f['title'])}</h3>{take}<figure><img alt='{html.escape(f['title'])}' "
                             f"src='data:image/png;base64,{b64}'><figcaption>{_inline_html(f['caption'])}"
                             "</figcaption></figure>")
            else:
                parts.append(f"<h3>{html.escape(f.title)}</h3><p class='skip'>Not drawn: {_inline_html(f.reason)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ entry points
def replication_section(s: q.Store, grid: str, verdicts: pd.DataFrame) -> Section:
    from . import replication as R

    rows, head = R.claims(s, grid, verdicts)
    sec = Section(f"Replication of the study's findings (grid `{grid}`)")
    short = R.in_short(rows)
    if short:
        sec.paragraphs.append("In short, in the study's own setting (verdicts per row below; hardware and "
                              "shot-based training are not part of this grid):")
        sec.paragraphs += short
    summ = R.summary_text(head)
    if summ:
        sec.paragraphs.append("Headline numbers (MIA success = the study's number: fraction of the forget set flagged "
                              "as member under the study protocol):")
        sec.paragraphs += summ
    sec.paragraphs.append(f"Regenerate: `qmu run grids/{grid}.yaml --results results && qmu report --results results "
                          f"--grid {grid} --out reports/{grid} --replication` (the grid run is resumable and reuses "
                          "stored stages).")
    sec.paragraphs.append(f"Reference slice: {describe_slice(head['reference'])}; means over seeds with 95% intervals. "
                          "Verdict rules (fixed in reports/replication.py):")
    sec.bullets = R.rules(s.has(*q.HELDOUT_COLUMNS))
    sec.tables.append(Table("Verdicts", ["finding", "model", "forget", "measured", "study", "verdict"], rows,
                            wrap=True))
    return sec


def build_report(results: str, out: str, grid: str | None = None, compare: tuple[str, str] | None = None,
                 title: str | None = None, replication: bool = False) -> Path:
    """Write report.html, report.md, figures/*.png|svg and tables/*.csv under `out`; return report.html.

    The report is built in a fresh folder beside `out` and swapped in when complete, so an interrupted or
    failed build leaves the previous report as it was."""
    final = Path(out).absolute()
    problem = out_problem(final)
    if problem:
        raise ReportError(f"--out {out}: {problem}")
    top = final.parent  # the outermost folder this build creates, removed again if it fails
    while not top.parent.exists():
        top = top.parent
    made = None if top.exists() else top
    work = _scratch(final)
    try:
        _write_report(results, work, grid, compare, title, replication)
    except BaseException:
        shutil.rmtree(made or work, ignore_errors=True)
        raise
    _swap(work, final)
    return final / "report.html"


def out_problem(out: Path) -> str | None:
    """Why `out` cannot take a report (None when it can): a file, under a file, or a folder of other things
    (the new report replaces the folder's contents)."""
    found = out
    while not found.exists() and found != found.parent:
        found = found.parent
    if found.is_file():
        return "is a file; give a directory" if found == out else f"{found} is a file; give a directory path"
    if found == out and any(p.name not in REPORT_FILES for p in out.iterdir()):
        return ("holds files other than a report (report.html, report.md, figures/, tables/); a report replaces "
                "the folder's contents, so give a new folder or one an earlier report wrote")
    return None


SQL_FILE = "queries.sql"
REPORT_FILES = ("report.html", "report.md", "figures", "tables", SQL_FILE)


def _scratch(final: Path) -> Path:
    """A new folder beside `final` (same filesystem: the swap is a rename); those of dead builds are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.building-*"):
        if not _alive(old.name.rsplit("-", 2)[-2]):
            shutil.rmtree(old, ignore_errors=True)
    work = final.parent / f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    return work


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _swap(work: Path, final: Path) -> None:
    """Put the finished build at `final`; the previous report, if any, is moved aside, then removed."""
    old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write_report(results: str, outp: Path, grid: str | None, compare: tuple[str, str] | None, title: str | None,
                  replication: bool) -> None:
    """The report's files, written under the empty folder `outp`."""
    from . import verdict_report as VR

    t0 = time.perf_counter()
    s = q.connect(results)
    try:
        known = q.grids(s)
        if not known:
            raise ReportError(f"--results: no result store at {s.root} (no cells/ or manifests/ there); run "
                              f"`qmu run GRID.yaml --results {results}` first")
        if grid is not None and grid not in known:
            raise ReportError(f"--grid: no grid {grid!r} under {s.root} (grids: {', '.join(known)})")
        names = [grid] if grid else known
        compared = _compare(s, compare, grid) if compare else None
        figdir = outp / "figures"
        figdir.mkdir()
        (outp / "tables").mkdir()
        sections: list[Section] = []
        fig_meta: list[dict] = []
        heads = []
        versions = sorted({v for gname in names for v in str(q.provenance(s, gname)["code_version"] or "").split(", ")
                           if v})
        judged = [g for g in names if q.status_counts(s, g)["ok"]]
        verdicts = VR.verdict_rows(s, results, judged) if judged else pd.DataFrame()
        if replication:
            sections += [replication_section(s, gname, verdicts) for gname in judged]
        for gname in names:
            gr = grid_report(s, gname, figdir, f"{gname}_" if len(names) > 1 else "", fig_meta)
            sections += gr.sections
            if not gr.headline.empty:
                gr.headline.to_csv(outp / "tables" / f"{gname}_per_method_model.csv", index=False)
                heads.append(gname)
        if compared:
            sections.append(compare_section(compared, figdir, fig_meta))
        if heads:
            (outp / SQL_FILE).write_text(queries_sql(s, heads))
        sections.append(Section("Definitions and intervals", bullets=list(NOTES) + (
            [f"The SQL of each grid's headline tables: [{SQL_FILE}]({SQL_FILE})."] if heads else [])))
        takeaways = [m["takeaway"] for m in fig_meta if m.get("takeaway")]
        sections[0:0] = lead_sections(s, results, judged, verdicts, outp / "tables", takeaways)
    finally:
        s.close()
    title = title or ("qmu-bench report: " + ", ".join(names)
                      + (f" (compare {compare[0]} vs {compare[1]})" if compare else ""))
    meta = [f"results: `{results}`", f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
            *provenance_lines(results, names, versions),
            "figures: `figures/*.png` and `.svg`; tables: `tables/*.csv`; definitions: docs/metrics.md"]
    warn = version_warning(versions, latest_run_code(results, names))
    (outp / "report.md").write_text(render_md(title, meta, sections, outp, warn))
    meta.append(f"built in {time.perf_counter() - t0:.1f} s")
    (outp / "report.html").write_text(render_html(title, meta, sections, warn))


def latest_run_code(results: str, grids: list[str], key: str = "code_version") -> list[str]:
    """The code versions (or `source_commit`s) of the grids' latest `qmu run`, as their manifests record them
    (the store's metadata; the report does not import the science code to ask it)."""
    from harness.store import ResultStore

    store = ResultStore(results)
    return sorted({str(m[key]) for g in grids if (m := store.manifest(g)) and m.get(key)})


def provenance_lines(results: str, names: list[str], versions: list[str]) -> list[str]:
    """Which code the results and this report come from: the science's hash, and the git commits."""
    from harness.identity import source_commit

    latest = latest_run_code(results, names)
    commits = latest_run_code(results, names, "source_commit")
    return [f"code version of the results (a hash of the science code, `workloads/`): "
            f"{', '.join(f'`{v}`' for v in versions) or 'unknown'}; of the latest `qmu run`: "
            f"{', '.join(f'`{v}`' for v in latest) or 'unknown'}",
            f"git commit of the latest `qmu run`: {', '.join(f'`{c}`' for c in commits) or 'not recorded'}; "
            f"of this report's code: `{source_commit() or 'not a git checkout'}`"]


def version_warning(versions: list[str], latest: list[str]) -> str:
    """Empty when every result was computed by the code of its grid's latest run (or that code is unknown)."""
    other = [v for v in versions if v not in latest]
    if not other or not latest:
        return ""
    return (f"{'these results were' if len(other) == len(versions) else 'some results were'} computed by code version "
            f"{', '.join(other)}, not by the code of the latest `qmu run` ({', '.join(latest)}), which keeps the cells "
            "it finds stored. Numbers may differ from what that code computes; to recompute them, run the grid again "
            "with a new `--results` root.")


def queries_sql(s: q.Store, grids: Sequence[str]) -> str:
    """The headline table's SQL of every grid (DuckDB, over the views `qmu query` opens), one statement each."""
    parts = [f"-- grid {g}: per method x model at the reference slice ({describe_slice(q.reference_slice(s, g))})\n"
             + q.table_sql(g, q.reference_slice(s, g)).strip() + ";\n" for g in grids]
    return "\n".join(parts)


def lead_sections(s: q.Store, results: str, grids: Sequence[str], df: pd.DataFrame, tables: Path,
                  takeaways: Sequence[str] = ()) -> list[Section]:
    """The report's opening: the verdict table (strongest attack per slice and metric, against `retrain`), then
    at most five Findings sentences drawn from the verdicts (`verdict_report.verdict_rows`), loss KS,
    relearning and privleak; without a verdict (no `retrain` cell), the figures' first five takeaways. The
    verdict rows also go to `tables/verdict_table.csv`."""
    from . import verdict_report as VR
    from .verdicts import VERDICTS

    sec = Section("Verdicts: which methods are equivalent to retrain?")
    if df.empty:
        sec.paragraphs.append("No verdict: it needs ok `retrain` cells and per-example attack scores beside the "
                              "methods' cells (the status section below says what this store has).")
    else:
        margins = {g: VR.grid_margins(results, g) for g in grids}
        sec.paragraphs.append(VR.margin_line(df, margins))
        cols = VR.table_columns(df)
        sec.tables.append(Table(
            "Verdict per slice, method and metric, on the slice's strongest attack", [c for c, _ in cols],
            [[f(r) for _, f in cols] for _, r in df.iterrows()], VR.rules_note(),
            marks=[VR.category_class(x) for x in df["verdict"]], mark_col=[c for c, _ in cols].index("verdict"),
            css="verdicts"))
        df.to_csv(tables / "verdict_table.csv", index=False)
    fnd = Section("Findings")
    side = [VR.side_tables(s, g, q.reference_slice(s, g)) for g in grids]
    frames = [pd.concat([x[i] for x in side if not x[i].empty]) if any(not x[i].empty for x in side)
              else pd.DataFrame() for i in range(4)]
    sentences = VR.findings(df, *frames)
    judged = not df.empty and df["verdict"].isin(VERDICTS).any()
    if not judged and takeaways:
        fnd.paragraphs.append("No `retrain` cell to judge the methods against, so no verdict; what the figures "
                              "below show:")
        sentences = (sentences + list(takeaways))[:VR.MAX_FINDINGS]
    if sentences:
        fnd.bullets = sentences
    else:
        fnd.paragraphs.append("Nothing to conclude: no ok cell with a `retrain` counterpart; see the status section "
                              "below.")
    return [sec, fnd]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qmu report", description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="results root")
    p.add_argument("--out", default="report", help="output directory")
    p.add_argument("--grid", default=None, help="only this grid (default: every grid in the store)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help="two grids (or backends) side by side")
    p.add_argument("--replication", action="store_true",
                   help="open with the study's findings, each marked reproduced / partly / not (reports/paper)")
    a = p.parse_args(argv)
    try:
        path = build_report(a.results, a.out, a.grid, tuple(a.compare) if a.compare else None,
                            replication=a.replication)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {path.resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
