"""The report's lead: the verdict table on each slice's strongest attack, and at most five Findings sentences.

    lead(s, results, grids, refs) -> (verdict Section, Findings Section, verdict rows)

The statistics are `reports.verdicts`'; this module picks what it judges (per slice and signal, the attack that is
strongest on the original model), leaves out methods that never ran (stopped after 0 or 1 steps), reads each
grid's margins from its manifest and lays the result out.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from . import queries as q
from .figures import join_words
from . import verdicts as v

# CSS class of each category's cell in the HTML table (colours in build.CSS)
CATEGORY_CLASS = {v.EQUIVALENT: "v-eq", v.DIFFERS: "v-diff", v.UNDERPOWERED: "v-under",
                  v.NOT_DISCRIMINATING: "v-nd"}
STOPPED = "stopped early: no result"
STOPPED_CLASS = "v-stop"
MAX_FINDINGS = 5


def prose(method: str) -> str:
    """A method's name in a sentence: `none` is the untouched original model, not a quantity."""
    return "the original model" if method == "none" else method


def grid_margins(results: str, grid: str) -> tuple[v.Margins, bool]:
    """The grid's equivalence margins as its latest run's manifest records them (the grid file's `verdicts:`
    section), else the defaults; and whether the grid set them."""
    from harness.store import ResultStore

    given = (ResultStore(results).manifest(grid) or {}).get("verdicts") or {}
    default = v.Margins()
    margins = v.Margins(auc=given.get("auc_margin", default.auc),
                        tpr_at_1pct_fpr=given.get("tpr_margin", default.tpr_at_1pct_fpr))
    return margins, bool(given)


def attack_scores() -> dict[str, str]:
    """The membership attacks the verdicts may use, by name -> per-example score column: the held-out paper
    attack, the loss attack and every catalog attack with a ROC (U-LiRA asks another question and stays out)."""
    return {"paper-mlp": "attack_score", "loss": "loss",
            **{a: c for a, c in q.SCORE_COLUMNS.items() if a in q.ROC_ATTACKS}}


def attack_label(name: str) -> str:
    """The attack's name as the report's other tables print it (by its ROC prefix; the paper's is `mia`)."""
    return q.ROC_ATTACKS.get("mia" if name == "paper-mlp" else name) or q.ATTACK_NAMES.get(name, name)


def stopped_early(s: q.Store, grid: str) -> pd.DataFrame:
    """Per slice and unlearning method: the seeds whose unlearning stopped after 0 or 1 steps (the model is then
    the original one: not a result), with the fewest steps taken, and those that stopped before any step
    because the rule's target was already met (the original looks unlearned to the rule: nothing to forget)."""
    axes = ", ".join(v.SLICE_AXES)
    met = "unlearn_steps = 0 AND unlearn_reached_target" if s.has("unlearn_reached_target") else "FALSE"
    return s.df(f"""
      SELECT {axes}, method, count(*) FILTER (WHERE unlearn_steps <= 1) AS n_stopped, count(*) AS n_seeds,
             min(unlearn_steps)::BIGINT AS min_steps, count(*) FILTER (WHERE {met}) AS n_met_at_start
      FROM cell_ci WHERE grid = {q.lit(grid)} AND method NOT IN ('none', 'retrain') AND unlearn_steps IS NOT NULL
      GROUP BY ALL HAVING count(*) FILTER (WHERE unlearn_steps <= 1) > 0""")


def _slice_key(r: Any) -> tuple:
    return tuple(None if pd.isna(r[a]) else (int(r[a]) if a in q.SHOT_AXES else r[a]) for a in v.SLICE_AXES)


def verdict_rows(s: q.Store, results: str, grids: Sequence[str], n_boot: int = v.N_BOOT) -> pd.DataFrame:
    """One row per grid, slice, method and signal of the strongest attack, with its verdict under Holm's
    correction over every verdict of the report; plus one row per slice and method that stopped early."""
    comparisons, stopped = [], []
    for g in grids:
        margins, _ = grid_margins(results, g)
        early = stopped_early(s, g)
        keys = {(_slice_key(r), r["method"]) for _, r in early.iterrows()}
        comparisons += v.strongest_comparisons(s.con, g, margins, n_boot=n_boot, attacks=attack_scores(),
                                               skip=lambda key, m, keys=keys: (key, m) in keys)
        stopped += [{"grid": g, **dict(zip(v.SLICE_AXES, _slice_key(r))), "method": r["method"],
                     "verdict": STOPPED, "min_steps": int(r["min_steps"]), "n_stopped": int(r["n_stopped"]),
                     "n_seeds": int(r["n_seeds"]), "n_met_at_start": int(r["n_met_at_start"])}
                    for _, r in early.iterrows()]
    rows = []
    for x in v.judge(comparisons):
        c = x.comparison
        (sig, est), = c.estimates.items()
        lo, hi = est.interval() if est.n_seeds else (math.nan, math.nan)
        rows.append({"grid": c.slice[0], **dict(zip(v.SLICE_AXES, c.slice[1:-2])), "method": c.method,
                     "signal": sig, "attack": c.slice[-1], "n_seeds": est.n_seeds, "d": est.value, "lo": lo,
                     "hi": hi, "margin": (c.margins or v.Margins()).of(sig), "mde": x.mde[sig],
                     "p_equivalent": x.p_equivalent, "p_differs": x.p_differs, "verdict": x.verdict, "note": x.note})
    out = pd.DataFrame(rows + stopped)
    if out.empty:
        return out
    out = _ordered(out)
    out.attrs["n_tests"] = 2 * len(comparisons)
    return out


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Display order: grid, slice (axes in report order), method, then ΔAUC before ΔTPR."""
    df = df.copy()
    for a in q.SHOT_AXES:
        df[a] = pd.Series([None if pd.isna(x) else int(x) for x in df[a]], index=df.index, dtype=object)
    sig = {s: i for i, s in enumerate(v.SIGNALS)}
    ranks = {a: {x: i for i, x in enumerate(q.sort_axis(a, df[a].dropna().unique().tolist()))}
             for a in ("model", "forget", "method", *q.SHOT_AXES, "backend")}

    def key(i: int) -> tuple:
        r = df.iloc[i]
        axes = tuple(ranks[a].get(r[a], len(ranks[a])) if r[a] is not None and not pd.isna(r[a]) else len(ranks[a])
                     for a in ("model", "forget", *q.SHOT_AXES, "backend", "method"))
        return (r["grid"], *axes, sig.get(r.get("signal"), -1))
    return df.iloc[sorted(range(len(df)), key=key)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ formatting
def _shots(r: Any) -> str:
    return "/".join("exact" if x is None or pd.isna(x) else str(int(x)) for x in (r[a] for a in q.SHOT_AXES))


def _num(x: Any, fmt: str = "+.3f") -> str:
    return "—" if x is None or pd.isna(x) else format(float(x), fmt)


def _interval(r: Any) -> str:
    if pd.isna(r.get("d")):
        return "—"
    return f"{r['d']:+.3f} [{_num(r['lo'], '+.2f')}, {_num(r['hi'], '+.2f')}]"


def _stopped_text(r: Any) -> str:
    steps = f"{int(r['min_steps'])} step{'s' if int(r['min_steps']) != 1 else ''}"
    met = int(r.get("n_met_at_start") or 0)
    why = (f" ({met} before any step: the stop target was already met, so the rule found nothing to forget)"
           if met else "")
    return f"stopped after {steps} in {int(r['n_stopped'])} of {int(r['n_seeds'])} seed(s){why}: not judged"


def counts(df: pd.DataFrame) -> dict[str, int]:
    return {c: int((df["verdict"] == c).sum()) if not df.empty else 0 for c in (*v.VERDICTS, STOPPED)}


def count_line(df: pd.DataFrame) -> str:
    n = counts(df)
    judged = sum(n[c] for c in v.VERDICTS)
    line = (f"{judged} verdicts: {n[v.EQUIVALENT]} equivalent to retrain, {n[v.DIFFERS]} differ, "
            f"{n[v.UNDERPOWERED]} underpowered, {n[v.NOT_DISCRIMINATING]} not discriminating")
    if n[STOPPED]:
        line += f"; {n[STOPPED]} method row(s) flagged as stopped after 0 or 1 steps and not judged"
    return line + "."


def margin_line(df: pd.DataFrame, margins: dict[str, tuple[v.Margins, bool]]) -> str:
    parts = []
    for g, (m, given) in margins.items():
        src = f"set in grid `{g}`" if given else "the defaults"
        parts.append(f"|ΔAUC| ≤ {m.auc:g} and |ΔTPR@1%FPR| ≤ {m.tpr_at_1pct_fpr:g} ({src})")
    n_tests = df.attrs.get("n_tests", 0)
    note = shared_note(df)
    return (f"Equivalence margins against `retrain`, fixed before the data is read: {'; '.join(parts)}. "
            f"Holm's correction is applied over the report's family of verdicts ({n_tests} tests: an equivalence "
            f"and a difference test per verdict) at family-wise α = {v.ALPHA:g}. {count_line(df)}"
            + (f" On every row, {note}." if note else ""))


def _p_cell(x: Any) -> str:
    return "—" if x is None or pd.isna(x) else ("1" if x >= 0.9995 else f"{x:.3f}" if x >= 0.001 else f"{x:.0e}")


def table_columns(df: pd.DataFrame) -> list[tuple[str, Any]]:
    """Columns of the verdict table; grid and backend only where the report has more than one."""
    cols: list[tuple[str, Any]] = []
    if df["grid"].nunique() > 1:
        cols.append(("grid", lambda r: str(r["grid"])))
    cols += [("model", lambda r: str(r["model"])), ("forget", lambda r: str(r["forget"])),
             ("shots train/unlearn/eval", _shots)]
    if df["backend"].nunique() > 1:
        cols.append(("backend", lambda r: str(r["backend"])))
    cols += [("method", lambda r: str(r["method"])),
             ("metric", lambda r: v.SIGNAL_LABELS.get(r.get("signal"), "—") if isinstance(r.get("signal"), str)
              else "—"),
             ("strongest attack", lambda r: attack_label(r["attack"]) if isinstance(r.get("attack"), str) else "—"),
             ("seeds", lambda r: str(int(r["n_seeds"]))),
             ("Δ vs retrain [95% CI]", _interval),
             ("margin", lambda r: f"±{r['margin']:g}" if not pd.isna(r.get("margin")) else "—"),
             ("MDE", lambda r: _num(r.get("mde"), ".3f")),
             ("p differs (Holm)", lambda r: _p_cell(r.get("p_differs"))),
             ("verdict", lambda r: str(r["verdict"]))]
    if (df["verdict"] == STOPPED).any() or not shared_note(df) and df["note"].fillna("").astype(bool).any():
        cols.append(("note", lambda r: _stopped_text(r) if r["verdict"] == STOPPED else str(r.get("note") or "")))
    return cols


def rules_note() -> str:
    """How to read the table (docs/results.md says more)."""
    return (f"Each row is one metric's verdict. Equivalent to retrain: two one-sided tests (TOST) put the difference "
            "inside its margin, and the same metric tells the original model (`none`) from `retrain` at this slice. "
            "Differs: the difference excludes 0 after Holm's correction (its adjusted p, in the table, is at most "
            f"α = {v.ALPHA:g}); the printed interval is the comparison's own 95% interval, so with a large family an "
            "interval that excludes 0 can still be underpowered. Not discriminating: `none` is itself equivalent to `retrain` on "
            "this metric here, so the metric says nothing about a method. Underpowered: none of these; MDE is the "
            f"smallest true difference a two-sided test at α = {v.ALPHA:g} detects with {v.POWER:.0%} power at this "
            "number of seeds and samples. " + v.rules()[2] + " Strongest attack: per slice and metric, the attack "
            "with the highest mean AUC (or TPR@1%FPR) on the original model's cells; a TPR@1%FPR that the scored "
            "non-members cannot resolve (the FPR floor) gives no verdict.")


def shared_note(df: pd.DataFrame) -> str:
    """The note every row carries (e.g. one seed only), said once above the table instead of on each row; empty
    when the rows differ or a method stopped early (its rows need their own note)."""
    notes = set(df["note"].fillna("")) if "note" in df else {""}
    return notes.pop() if len(notes) == 1 and not (df["verdict"] == STOPPED).any() else ""


def category_class(verdict: str) -> str:
    return CATEGORY_CLASS.get(verdict, STOPPED_CLASS)


# ------------------------------------------------------------------------------------------------ findings
def _where(r: Any) -> str:
    shots = _shots(r)
    return f"{r['model']} {r['forget']}" + ("" if shots == "exact/exact/exact" else f" at shots {shots}")


def _some(items: Sequence[str], k: int = 3) -> str:
    items = list(dict.fromkeys(items))
    head = ", ".join(items[:k])
    return head + (f" and {len(items) - k} more" if len(items) > k else "")


def _leak_sentence(df: pd.DataFrame) -> str | None:
    none = df[(df["method"] == "none") & df["verdict"].isin(v.VERDICTS)]
    if none.empty:
        return None
    slices = none.groupby([*v.SLICE_AXES, "grid"], dropna=False).ngroups
    leaks = none[none["verdict"] == v.DIFFERS]
    if not leaks.empty:
        top = leaks.loc[leaks["d"].abs().idxmax()]
        n = leaks.groupby([*v.SLICE_AXES, "grid"], dropna=False).ngroups
        return (f"The strongest attack tells the original model from retrain at {n} of {slices} slice(s) "
                f"(largest: {v.SIGNAL_LABELS[top['signal']]} {_interval(top)} by {attack_label(top['attack'])} on "
                f"{_where(top)}).")
    nd = none[none["verdict"] == v.NOT_DISCRIMINATING]
    mde = none.loc[none["signal"] == "auc", "mde"].dropna()
    s = ("At no slice does the strongest attack tell the original model from retrain at this number of seeds, "
         "after Holm's correction over the report"
         + (f" (minimum detectable ΔAUC {mde.min():.3f} to {mde.max():.3f})" if len(mde) else ""))
    if not nd.empty:
        s += f"; it is equivalent to retrain on {_some([_where(r) for _, r in nd.iterrows()])}"
    return s + ", so no method can be shown equivalent to retrain there."


def _method_sentence(df: pd.DataFrame) -> str | None:
    m = df[(df["method"] != "none") & df["verdict"].isin(v.VERDICTS)]
    if m.empty:
        return None
    n_all = int(df["verdict"].isin(v.VERDICTS).sum())
    n = counts(m)
    eq = [f"{r['method']} on {_where(r)} by {v.SIGNAL_LABELS[r['signal']]}" for _, r in
          m[m["verdict"] == v.EQUIVALENT].iterrows()]
    diff = [f"{r['method']} on {_where(r)} by {v.SIGNAL_LABELS[r['signal']]} {_interval(r)}" for _, r in
            m[m["verdict"] == v.DIFFERS].iterrows()]
    under = m[m["verdict"] == v.UNDERPOWERED]
    parts = [f"{n[v.EQUIVALENT]} equivalent to retrain" + (f" ({_some(eq)})" if eq else ""),
             f"{n[v.DIFFERS]} differ" + (f" ({_some(diff, 2)})" if diff else "")]
    if not under.empty:
        mde = under.loc[under["signal"] == "auc", "mde"].dropna()
        parts.append(f"{len(under)} underpowered" + (f" (median minimum detectable ΔAUC {mde.median():.3f})"
                                                     if len(mde) else ""))
    parts.append(f"{n[v.NOT_DISCRIMINATING]} not discriminating")
    rest = n_all - len(m)
    own = f" (the other {rest} are the original model's)" if rest else ""
    return (f"Of the {len(m)} verdict{'s' if len(m) != 1 else ''} on unlearning methods{own}, " + ", ".join(parts)
            + ".")


def _p(p: float) -> str:
    return "< 1e-300" if p < 1e-300 else f"= {p:.1g}"


def _ks_sentence(ks: pd.DataFrame) -> str | None:
    ks = ks[ks["method"] != "none"] if not ks.empty else ks
    if ks.empty:
        return None
    rej = ks[ks["p_combined"] < v.ALPHA].sort_values("p_combined")
    keep = ks[ks["p_combined"] >= v.ALPHA]
    s = (f"Loss KS (forget-set losses against retrain's, per seed, p-values combined by "
         f"{ks['combine'].iloc[0].capitalize()}'s method): ")
    if not rej.empty:
        s += "the loss distributions differ for " + _some(
            [f"{r['method']} on {_where(r)} (p {_p(r['p_combined'])})" for _, r in rej.iterrows()])
    if not keep.empty:
        s += ("; " if not rej.empty else "") + "no difference is detected for " + _some(
            [f"{r['method']} on {_where(r)}" for _, r in keep.iterrows()])
    return s + "."


def _relearn_privleak_sentence(rl: pd.DataFrame, pl: pd.DataFrame) -> str | None:
    parts = []
    if not rl.empty:
        rl = rl.dropna(subset=["relearn_steps"])
        for (mo, fo), g in rl.groupby(["model", "forget"], sort=True):
            by = dict(zip(g["method"], g["relearn_steps"]))
            others = {m: x for m, x in by.items() if m not in ("retrain", "none")}
            if not by.get("retrain") or not others:  # retrain at 0: the forget set was never learned better
                continue
            lo, hi = min(others, key=others.get), max(others, key=others.get)
            span = (f"{lo} {others[lo]:.0f}" if len(others) == 1 else
                    f"every method {others[lo]:.0f}" if others[lo] == others[hi] else
                    f"the methods {others[lo]:.0f} ({lo}) to {others[hi]:.0f} ({hi})")
            parts.append(f"{mo} {fo}: retrain {by['retrain']:.0f}, {span}")
    s = ("relearning (fine-tuning steps on a tenth of the forget set until its accuracy recovers; fewer than "
         "retrain's means the knowledge is still there): " + "; ".join(parts)) if parts else ""
    if not pl.empty:
        pl = pl.dropna(subset=["privleak"])
        if not pl.empty:
            lo, hi = pl.loc[pl["privleak"].idxmin()], pl.loc[pl["privleak"].idxmax()]
            s += ("; " if s else "") + (f"privleak ((AUC − AUC_retrain) / AUC_retrain of the held-out attack) runs "
                                        f"from {lo['privleak']:+.3f} ({prose(lo['method'])} on {lo['model']} "
                                        f"{lo['forget']}) to {hi['privleak']:+.3f} ({prose(hi['method'])} on "
                                        f"{hi['model']} {hi['forget']})")
    return s[0].upper() + s[1:] + "." if s else None


def _stopped_sentence(df: pd.DataFrame) -> str | None:
    st = df[df["verdict"] == STOPPED]
    if st.empty:
        return None
    items = [f"{r['method']} on {_where(r)} (after {int(r['min_steps'])} step{'s' if r['min_steps'] != 1 else ''} "
             f"in {int(r['n_stopped'])} of {int(r['n_seeds'])} seeds)" for _, r in st.iterrows()]
    met = int(st.get("n_met_at_start", pd.Series(dtype=float)).fillna(0).sum())
    why = (f" In {met} of these seeds the stop target was met before any step: the original model's forget-set "
           "accuracy was already no higher than the rule's target, so by that rule there was nothing to forget."
           if met else "")
    return (f"Stopped before unlearning anything: {_some(items)}; such a model is the original one at a fraction "
            f"of retrain's cost, so it is flagged and not reported as a result.{why}")


def _ulira_sentence(ul: pd.DataFrame) -> str | None:
    """Per slice, the models U-LiRA tells from a retrained one: accuracy interval clear of 0.5 (either side)."""
    if ul.empty or "ulira_accuracy" not in ul:
        return None
    ul = ul.dropna(subset=["ulira_accuracy", "ulira_accuracy_lo", "ulira_accuracy_hi"])
    ul = ul[ul["method"] != "retrain"]
    if ul.empty:
        return None
    parts = []
    for (mo, fo), g in ul.groupby(["model", "forget"], sort=False):
        told = [prose(r["method"]) + (" (below 0.5)" if r["ulira_accuracy_hi"] < 0.5 else "")
                for _, r in g.iterrows() if r["ulira_accuracy_lo"] > 0.5 or r["ulira_accuracy_hi"] < 0.5]
        if told:
            parts.append(f"{mo} {fo}: {join_words(told)}")
    n = int(ul["n_seeds"].max())
    head = "U-LiRA (per forget sample: the unlearned model, or one retrained without it?) "
    if not parts:
        return head + (f"tells no model from a retrained one (every accuracy interval holds 0.5), which at {n} "
                       "seeds does not show any method equivalent to retraining.")
    return head + (f"tells these from a retrained one, their accuracy intervals clear of 0.5: {'; '.join(parts)}; "
                   f"every other interval holds 0.5, which at {n} seeds does not show a method equivalent to "
                   "retraining.")


def findings(df: pd.DataFrame, ks: pd.DataFrame, relearn: pd.DataFrame, privleak: pd.DataFrame,
             ulira: pd.DataFrame | None = None) -> list[str]:
    """At most five bullets: the original model's leakage, the methods' verdicts (with U-LiRA's reading where
    it ran), loss KS, relearning and privleak, and the methods that stopped early."""
    method = " ".join(x for x in (_method_sentence(df) if not df.empty else None,
                                  _ulira_sentence(ulira if ulira is not None else pd.DataFrame())) if x)
    out = ([] if df.empty else [_leak_sentence(df)]) + [method or None]
    if not df.empty and not ks.empty:  # a method that stopped early is no result, here either
        st = df[df["verdict"] == STOPPED]
        gone = set(zip(st["grid"], st["model"], st["forget"], st["method"]))
        ks = ks[[k not in gone for k in zip(ks["grid"], ks["model"], ks["forget"], ks["method"])]]
    out += [_ks_sentence(ks), _relearn_privleak_sentence(relearn, privleak)]
    out += [] if df.empty else [_stopped_sentence(df)]
    return [x for x in out if x][:MAX_FINDINGS]


def loss_ks_at(s: q.Store, grid: str, where: dict[str, Any]) -> pd.DataFrame:
    """`verdicts.loss_ks_table` of the grid, its rows at the axis values of `where` (None = exact shots)."""
    ks = v.loss_ks_table(s.con, grid)
    if ks.empty:
        return ks
    ks["grid"] = grid
    return ks[q.at_axes(ks, where)]


def stopped_at(s: q.Store, grid: str, where: dict[str, Any]) -> set[tuple[str, str]]:
    """(model, method) of the methods flagged as stopped early at the axis values of `where`."""
    st = stopped_early(s, grid)
    st = st[q.at_axes(st, where)] if not st.empty else st
    return set(zip(st["model"], st["method"])) if not st.empty else set()


def side_tables(s: q.Store, grid: str, ref: dict[str, Any]) -> tuple[pd.DataFrame, ...]:
    """Loss KS, relearning, privleak and U-LiRA's accuracy at the grid's reference shots and backend, every
    forget set."""
    shots = {k: x for k, x in ref.items() if k != "forget"}
    ks = loss_ks_at(s, grid, shots)
    filt = {"grid": grid, **shots}
    rl = q.aggregate(s, ["model", "forget", "method"], filt, metrics=["relearn_steps"]) \
        if s.has("relearn_steps") else pd.DataFrame()
    cc = q.closeness_cells(s, filt)
    pl = q.seed_mean(cc, ["model", "forget", "method"], ["privleak"]) if not cc.empty else cc
    ul = q.aggregate(s, ["model", "forget", "method"], filt, metrics=["ulira_accuracy"]) \
        if "ulira_accuracy" in q.METRICS and s.has("ulira_accuracy") else pd.DataFrame()
    return ks, rl, pl, ul
