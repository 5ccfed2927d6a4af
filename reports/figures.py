"""Seaborn/matplotlib figures drawn from the DataFrames of `reports.queries`.

Each `fig_*` function returns a `Figure` or a `Skipped` (with the reason), so a grid whose axis has a single
value, or a store without the columns a figure needs, still gets a report that says why the figure is absent.
A `Figure` says one thing: its `takeaway` is one sentence computed from the same DataFrame it draws, and the
report's "Findings" paragraph is built from those sentences. Every panel is titled by model and metric, and
a panel without data is never drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from . import queries as q  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def label(m: str) -> str:
    """A metric's display label (`gap_X`: X minus retrain's), from the report's vocabulary (queries.METRICS)."""
    if m.startswith("gap_") and m[4:] in q.METRICS:
        return f"{q.METRICS[m[4:]][0]} − retrain"
    return q.METRICS[m][0] if m in q.METRICS else m
CHANCE_ACC = 0.1  # ten digit classes
CHANCE = {"mia_auc": 0.5, "loss_auc": 0.5, "rmia_auc": 0.5, "lira_auc": 0.5, "mia_advantage": 0.0}
SAME = 1e-9  # two methods whose every plotted number differs by less than this are named as identical


@dataclass
class Figure:
    name: str
    title: str
    fig: Any
    caption: str
    takeaway: str = ""


@dataclass
class Skipped:
    name: str
    title: str
    reason: str


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.05)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "axes.titlesize": 10, "axes.labelsize": 9.5,
                         "legend.fontsize": 8.5, "legend.title_fontsize": 9, "svg.fonttype": "none"})


def method_colors(methods: Sequence[str]) -> dict[str, Any]:
    known = list(q.METHODS) + sorted(set(methods) - set(q.METHODS))
    # the colorblind palette has 10 colours and cycles after them; more methods than that take dark hues, told
    # apart from the first ten by lightness (bright hues of the same angle read as the same colour)
    pal = sns.color_palette("colorblind", 10)[: len(known)] + sns.hls_palette(max(0, len(known) - 10), h=0.08,
                                                                                l=0.28, s=0.9)
    colors = dict(zip(known, pal))
    colors["retrain"] = (0.15, 0.15, 0.15)
    return colors


def shots_label(v: Any) -> str:
    return "exact" if _isnull(v) else f"{int(v):,}"


def _isnull(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _err(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo = np.where(np.isnan(lo), y, lo)
    hi = np.where(np.isnan(hi), y, hi)
    return np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])


def _col(df: pd.DataFrame, c: str) -> np.ndarray:
    if c not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)


def _has(df: pd.DataFrame, c: str) -> bool:
    return c in df and not pd.to_numeric(df[c], errors="coerce").isna().all()


def _subplots(nrows: int, ncols: int, **kw):
    return plt.subplots(nrows, ncols, layout="constrained", squeeze=False, **kw)


def _legend(fig, colors: dict[str, Any], methods: Sequence[str], title: str = "method") -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="*" if m == "retrain" else "o", linestyle="-",
                      markersize=9 if m == "retrain" else 6, label=m) for m in methods]
    fig.legend(handles=handles, loc="outside right center", frameon=False, title=title)


def _pts(v: float) -> str:
    return f"{abs(v) * 100:.0f} point{'s' if round(abs(v) * 100) != 1 else ''}"


def join_words(xs: Sequence[str]) -> str:
    xs = list(xs)
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def metric_unit(m: str) -> str:
    base = m.removeprefix("gap_")
    if base.startswith("acc_") or base in ("mia_success", "mia_recall_heldout", "mia_nonmember_flag_rate") \
            or "tpr" in base:
        return "fraction"
    if base.endswith("_auc"):
        return "AUC"
    if base == "mia_advantage":
        return "recall − flag rate"
    return ""


def axis_label(m: str) -> str:
    """The unit of a metric's axis (the panel title names the metric)."""
    u = metric_unit(m)
    if m.startswith("gap_"):
        return f"difference to retrain ({u})" if u else "difference to retrain"
    return {"fraction": "fraction of samples", "AUC": "AUC (0.5 = chance)"}.get(u, u or label(m))


# ------------------------------------------------------------------------------------------------ axes
def zoom(ax, m: str, lo: np.ndarray, hi: np.ndarray, axis: str = "y") -> None:
    """Accuracy and AUC axes zoomed to the data (with the chance level drawn, or noted when off the axis);
    recall-like rates keep [0, 1], where 0 is the target."""
    base = m.removeprefix("gap_")
    setlim = ax.set_ylim if axis == "y" else ax.set_xlim
    line = ax.axhline if axis == "y" else ax.axvline
    vals = np.r_[lo, hi]
    vals = vals[~np.isnan(vals)]
    if m.startswith("gap_"):
        line(0.0, color="0.25", lw=0.9, ls="--")
        if len(vals):
            span = max(vals.max(), 0) - min(vals.min(), 0)
            pad = max(span * 0.08, 0.01)
            setlim(min(vals.min(), 0) - pad, max(vals.max(), 0) + pad)
        return
    chance = CHANCE_ACC if base.startswith("acc_") else CHANCE.get(base)
    if chance is None or not len(vals):
        if base in q.BOUNDED and base not in q.SIGNED:
            setlim(-0.04, 1.04)
        return
    top = 1.0
    vmin, vmax = vals.min(), vals.max()
    if base.endswith("_auc") or base in q.SIGNED:
        vmin, vmax = min(vmin, chance), max(vmax, chance)  # chance is the reference, keep it in view
    pad = max((vmax - vmin) * 0.08, 0.01)
    a, b = max(vmin - pad, -1.0 if base in q.SIGNED else 0.0), min(vmax + pad, top + 0.01)
    setlim(a, b)
    if a <= chance <= b:
        line(chance, color="0.45", lw=0.9, ls=":")
    else:
        where = "below" if chance < a else "above"
        ax.text(0.99, 0.02 if where == "below" else 0.96, f"chance {chance:.2f} ({where} the axis)",
                transform=ax.transAxes, ha="right", va="bottom" if where == "below" else "top", fontsize=7,
                color="0.35", zorder=5, bbox={"facecolor": "white", "alpha": 0.85, "lw": 0, "pad": 1.0})


def identical_methods(df: pd.DataFrame, cols: Sequence[str], by: Sequence[str] = ("model",)) -> list[list[str]]:
    """Groups of methods whose every value of `cols` is the same (e.g. a finetune that moved nothing)."""
    cols = [c for c in cols if c in df]
    if df.empty or not cols:
        return []
    methods = q.sort_axis("method", df["method"].unique())
    rest = [c for c in df.columns if c in q.AXES and c != "method"]
    vec = {}
    for me in methods:
        sub = df[df["method"] == me]
        keys = ["|".join(map(str, row)) for row in sub[rest].itertuples(index=False)] if rest else []
        order = np.argsort(keys, kind="stable")
        sub, keys = sub.iloc[order], [keys[k] for k in order]
        vec[me] = (tuple(keys), np.nan_to_num(sub[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float),
                                              nan=-9e9))
    groups: list[list[str]] = []
    used: set[str] = set()
    for i, a in enumerate(methods):
        if a in used:
            continue
        g = [a]
        for b in methods[i + 1:]:
            if b not in used and vec[a][0] == vec[b][0] and vec[a][1].shape == vec[b][1].shape \
                    and np.allclose(vec[a][1], vec[b][1], atol=SAME, rtol=0):
                g.append(b)
                used.add(b)
        if len(g) > 1:
            groups.append(g)
    return groups


def identical_note(groups: list[list[str]]) -> str:
    if not groups:
        return ""
    return " Same numbers in this figure: " + "; ".join(" = ".join(sorted(g, key=lambda m: m != "none")) for g in groups) + \
        " (drawn on top of each other)."


# ------------------------------------------------------------------------------------------------ leakage
def leak_metric(df: pd.DataFrame) -> str:
    """The leakage number to judge by: the held-out advantage where the store has it, else the attack AUC."""
    return "mia_advantage" if _has(df, "mia_advantage") else "mia_auc"


def fig_leakage(df: pd.DataFrame, note: str) -> Figure | Skipped:
    """Forest plot per (forget, model): each method's leakage and retained accuracy, with retrain's value as
    the reference line. df: aggregate by (forget, model, method) at the reference shots."""
    name, title = "leakage_vs_accuracy", "Leakage and retained accuracy per method"
    if df.empty:
        return Skipped(name, title, "no ok cells at the reference slice")
    lm = leak_metric(df)
    cols = [c for c in dict.fromkeys([lm, "mia_auc", "mia_success", "acc_test_retain"]) if _has(df, c)]
    if not cols:
        return Skipped(name, title, "no leakage or accuracy column has a value at this slice")
    forgets = q.sort_axis("forget", df["forget"].unique())
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    rows = [(fo, mo) for fo in forgets for mo in models if not df[(df["forget"] == fo) & (df["model"] == mo)].empty]
    fig, axes = _subplots(len(rows), len(cols), figsize=(3.5 * len(cols) + 1.4, 0.32 * len(methods) * len(rows)
                                                         + 1.0 * len(rows) + 0.4))
    for i, (fo, mo) in enumerate(rows):
        sub = df[(df["forget"] == fo) & (df["model"] == mo)].set_index("method")
        ms = [m for m in methods if m in sub.index]
        for j, m in enumerate(cols):
            ax = axes[i][j]
            y = np.arange(len(ms))[::-1]
            v, lo, hi = (np.array([sub.loc[me].get(k, np.nan) for me in ms], float) for k in (m, f"{m}_lo", f"{m}_hi"))
            if "retrain" in sub.index and not _isnull(sub.loc["retrain"].get(m)):
                r = sub.loc["retrain"]
                if not _isnull(r.get(f"{m}_lo")) and not _isnull(r.get(f"{m}_hi")):
                    ax.axvspan(r[f"{m}_lo"], r[f"{m}_hi"], color="0.85", zorder=0)
                ax.axvline(r[m], color="0.15", lw=1.0, ls="--", zorder=1)
            for k, me in enumerate(ms):
                if np.isnan(v[k]):
                    continue
                e = _err(v[k:k + 1], lo[k:k + 1], hi[k:k + 1])
                ax.errorbar(v[k:k + 1], y[k:k + 1], xerr=e, fmt="*" if me == "retrain" else "o", color=colors[me],
                            markersize=10 if me == "retrain" else 6, capsize=2.5, elinewidth=1.1, zorder=3)
            ax.set_yticks(y)
            ax.set_yticklabels(ms if j == 0 else [""] * len(ms))
            ax.set_ylim(-0.7, len(ms) - 0.3)
            zoom(ax, m, np.r_[lo, v], np.r_[hi, v], axis="x")
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel(axis_label(m))
            ax.set_title(f"{mo}, forget {fo}:\n{label(m)}")
    same = identical_methods(df, cols, by=("forget", "model"))
    cap = ("Each row is a method, means over seeds with 95% intervals; the dashed line and grey band are "
           "`retrain`'s value and interval (the target). " + ("Leakage is judged by the held-out advantage and "
           "AUC; MIA success is the study's number (study protocol), kept for comparison. " if lm ==
           "mia_advantage" else "This store has no held-out columns: leakage is the attack AUC; MIA success is "
           "the study's number. ") + "Dotted: chance." + identical_note(same) + " " + note)
    return Figure(name, title, fig, cap, _leak_takeaway(df, lm, same))


def _leak_takeaway(df: pd.DataFrame, lm: str, same: list[list[str]]) -> str:
    parts = []
    primary = q.sort_axis("forget", df["forget"].unique())
    primary = [f for f in primary if str(f).startswith("class:")][:1] or primary[:1]
    for mo in sorted(df["model"].unique()):
        sub = df[(df["model"] == mo) & (df["forget"] == primary[0])].set_index("method")
        un = [m for m in sub.index if m not in ("none", "retrain")]
        if not un:
            continue

        def near(m: str, metric: str) -> bool:
            lo, hi = sub.loc[m].get(f"gap_{metric}_lo"), sub.loc[m].get(f"gap_{metric}_hi")
            return not _isnull(lo) and not _isnull(hi) and lo <= 0 <= hi

        # judge by the first leakage measure that tells the original model from retrain at this slice
        m_used = next((m for m in dict.fromkeys([lm, "mia_auc"]) if "none" in sub.index and _has(df, f"gap_{m}")
                       and not near("none", m)), lm)
        reach = [m for m in un if near(m, m_used)]
        s = f"on {mo} ({primary[0]}), " + (f"{join_words(reach)} reach{'es' if len(reach) == 1 else ''} retrain's "
                                           f"{label(m_used)}" if reach else f"no method reaches retrain's {label(m_used)}")
        if "retrain" not in sub.index:  # without a target, "reaches nothing" would be a false finding
            s = f"on {mo} ({primary[0]}), the grid has no retrain cell to judge leakage against"
        elif "none" in sub.index and near("none", m_used):
            s += f" (so does the original model: at this slice the {label(m_used)} cannot tell it from retrain)"
        elif m_used != lm:
            s += f" (the {label(lm)} cannot tell the original model from retrain here)"
        if "none" in sub.index and not _isnull(sub.loc["none"].get("acc_test_retain")):
            base = float(sub.loc["none"]["acc_test_retain"])
            losses = [(m, base - float(sub.loc[m]["acc_test_retain"])) for m in un
                      if not _isnull(sub.loc[m].get("acc_test_retain"))]
            big = [f"{m} loses {_pts(d)}" for m, d in sorted(losses, key=lambda x: -x[1]) if d >= 0.02]
            s += "; " + (join_words(big) + " of retained accuracy against the original model" if big else
                         "no method loses 2 points of retained accuracy against the original model")
        parts.append(s)
    if not parts:
        return ""
    out = "; ".join(parts) + "."
    if same:
        out += " " + "; ".join(" = ".join(sorted(g, key=lambda m: m != "none")) for g in same) + " (the same numbers in this figure)."
    return out[0].upper() + out[1:]


# ------------------------------------------------------------------------------------------------ shot axes
def _shot_positions(values: Sequence[Any]) -> tuple[dict[Any, float], float | None]:
    finite = sorted(v for v in values if not _isnull(v))
    pos = {v: float(v) for v in finite}
    sep = None
    if any(_isnull(v) for v in values):
        top = finite[-1] if finite else 1.0
        pos[None] = top * 8.0
        sep = top * math.sqrt(8.0)
    return pos, sep


def _key(v: Any) -> Any:
    return None if _isnull(v) else int(v)


def fig_shots(df: pd.DataFrame, axis: str, metrics: Sequence[str], name: str, title: str, note: str) -> Figure | Skipped:
    """df: aggregate by (model, method, axis). One row of panels per model, one column per metric."""
    vals = {_key(v) for v in df[axis]} if not df.empty else set()
    if len(vals) < 2:
        return Skipped(name, title, f"`{axis}` has a single value in this grid"
                       + (f" ({shots_label(next(iter(vals)))})" if vals else "") + "; nothing to plot against")
    metrics = [m for m in metrics if _has(df, m)]
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    pos, sep = _shot_positions(list(vals))
    fig, axes = _subplots(len(models), len(metrics), figsize=(4.2 * len(metrics) + 1.4, 3.0 * len(models)))
    n_methods = max(len(methods), 1)
    for j, mo in enumerate(models):
        for i, m in enumerate(metrics):
            ax = axes[j][i]
            los, his = [], []
            for k, me in enumerate(methods):
                sub = df[(df["model"] == mo) & (df["method"] == me)].copy()
                if sub.empty:
                    continue
                sub["_x"] = [pos[_key(v)] for v in sub[axis]]
                sub = sub.sort_values("_x")
                y = _col(sub, m)
                if np.all(np.isnan(y)):
                    continue
                # a multiplicative dodge, so methods with the same numbers stay visible side by side
                x = sub["_x"].to_numpy(float) * (1.0 + 0.07 * (k - (n_methods - 1) / 2) / n_methods * 2)
                fin = np.array([not _isnull(v) for v in sub[axis]])
                lo, hi = _col(sub, f"{m}_lo"), _col(sub, f"{m}_hi")
                los.append(np.where(np.isnan(lo), y, lo))
                his.append(np.where(np.isnan(hi), y, hi))
                e = _err(y, lo, hi)
                ax.errorbar(x[fin], y[fin], yerr=e[:, fin], color=colors[me], marker="o", markersize=4.5, lw=1.3,
                            capsize=2, elinewidth=0.9)
                if (~fin).any():
                    ax.errorbar(x[~fin], y[~fin], yerr=e[:, ~fin], color=colors[me], marker="D", markersize=5,
                                linestyle="", capsize=2, elinewidth=0.9)
            ax.set_xscale("log")
            ticks = sorted(pos.items(), key=lambda kv: kv[1])
            ax.set_xticks([p for _, p in ticks])
            ax.set_xticklabels([shots_label(v) for v, _ in ticks], rotation=0)
            ax.minorticks_off()
            if sep is not None:
                ax.axvline(sep, color="0.4", lw=0.8, ls=(0, (2, 2)))
            ax.set_xlim(min(pos.values()) / 1.6, max(pos.values()) * 1.6)
            if los:
                zoom(ax, m, np.concatenate(los), np.concatenate(his))
            ax.set_ylabel(axis_label(m))
            ax.set_title(f"{mo}: {label(m)}")
            if j == len(models) - 1:
                ax.set_xlabel(f"{axis.replace('_', ' ')} (shots per circuit, log; exact apart)")
    _legend(fig, colors, methods)
    same = identical_methods(df, metrics)
    cap = (f"Metrics against `{axis}` (log axis; `exact`, i.e. analytic, is drawn apart as a diamond). Bars are 95% "
           f"intervals; methods are dodged slightly along x. Dotted: chance.{identical_note(same)} {note}")
    return Figure(name, title, fig, cap, _shots_takeaway(df, axis))


def _shots_takeaway(df: pd.DataFrame, axis: str) -> str:
    lm = "mia_auc" if _has(df, "mia_auc") else "mia_success"
    me = "none" if axis == "eval_shots" else next((m for m in ("ga", "rga", "ssd", "none") if m in set(df["method"])), None)
    parts = []
    for mo in sorted(df["model"].unique()):
        sub = df[(df["model"] == mo) & (df["method"] == me)]
        ex = sub[sub[axis].map(_isnull)]
        fin = sub[~sub[axis].map(_isnull)]
        if ex.empty or fin.empty:
            continue
        few = fin.loc[pd.to_numeric(fin[axis]).idxmin()]
        a0, a1 = float(ex.iloc[0][lm]), float(few[lm])
        acc0, acc1 = ex.iloc[0].get("acc_test_retain"), few.get("acc_test_retain")
        who = "the original model's" if me == "none" else f"{me}'s"
        s = f"on {mo}, {who} {label(lm)} is {a1:.2f} at {int(few[axis]):,} shots against {a0:.2f} exact"
        if not _isnull(acc0) and not _isnull(acc1):
            s += f" (retained accuracy {float(acc1):.2f} vs {float(acc0):.2f})"
        parts.append(s)
    if not parts:
        return ""
    what = {"eval_shots": "inference shots", "unlearn_shots": "unlearning shots", "train_shots": "training shots"}[axis]
    out = f"Few {what}: " + "; ".join(parts) + "."
    return out


# ------------------------------------------------------------------------------------------------ forget size
def fig_forget(df: pd.DataFrame, metrics: Sequence[str], note: str) -> Figure | Skipped:
    name, title = "forget_set_size", "Forget-set size"
    forgets = q.sort_axis("forget", df["forget"].unique()) if not df.empty else []
    if len(forgets) < 2:
        return Skipped(name, title, "`forget` has a single value in this grid"
                       + (f" ({forgets[0]})" if forgets else "") + "; nothing to compare")
    metrics = [m for m in metrics if _has(df, m)]
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    xpos = {f: i for i, f in enumerate(forgets)}
    sizes = df.groupby("forget")["n_forget"].mean()
    labels = [f"{f}\n(n={sizes.get(f):.0f})" if not _isnull(sizes.get(f)) else f for f in forgets]
    fig, axes = _subplots(len(models), len(metrics), figsize=(max(4.2, 1.1 * len(forgets) + 1.5) * len(metrics)
                                                              + 1.4, 3.0 * len(models)))
    for j, mo in enumerate(models):
        for i, m in enumerate(metrics):
            ax = axes[j][i]
            los, his = [], []
            for k, me in enumerate(methods):
                sub = df[(df["model"] == mo) & (df["method"] == me)]
                if sub.empty:
                    continue
                x = np.array([xpos[f] for f in sub["forget"]], float) + (k - (len(methods) - 1) / 2) * 0.6 / len(methods)
                y, lo, hi = _col(sub, m), _col(sub, f"{m}_lo"), _col(sub, f"{m}_hi")
                los.append(np.where(np.isnan(lo), y, lo))
                his.append(np.where(np.isnan(hi), y, hi))
                ax.errorbar(x, y, yerr=_err(y, lo, hi), color=colors[me], marker="o", markersize=4.5, lw=0,
                            elinewidth=1.0, capsize=2)
            ax.set_xticks(range(len(forgets)))
            ax.set_xticklabels(labels)
            ax.set_xlim(-0.5, len(forgets) - 0.5)
            if los:
                zoom(ax, m, np.concatenate(los), np.concatenate(his))
            ax.set_ylabel(axis_label(m))
            ax.set_title(f"{mo}: {label(m)}")
            if j == len(models) - 1:
                ax.set_xlabel("forget set (n = samples)")
    _legend(fig, colors, methods)
    same = identical_methods(df, metrics)
    cap = ("Metrics per forget set (random:N ordered by N, then class:K). Bars are 95% intervals; methods are "
           f"dodged along x. Dotted: chance.{identical_note(same)} {note}")
    lm = leak_metric(df)
    parts = []
    for mo in models:
        r = df[(df["model"] == mo) & (df["method"] == "retrain")].set_index("forget")
        vals = [f"{float(r.loc[f][lm]):.2f} on {f}" for f in forgets if f in r.index and not _isnull(r.loc[f][lm])]
        if vals:
            parts.append(f"{mo}: {join_words(vals)}")
    take = (f"Retrain's {label(lm)}, the level an unlearned model should reach, is " + "; ".join(parts) + ".") \
        if parts else ""
    return Figure(name, title, fig, cap, take)


# ------------------------------------------------------------------------------------------------ ROC
ROC_BARS = (0.01, 0.1)


def fig_roc(df: pd.DataFrame, note: str, heldout: bool) -> Figure | Skipped:
    """Log-log only where the scored non-members resolve FPR 1% (floor <= 0.01); otherwise linear axes."""
    name, title = "roc", "ROC of the attacks"
    if df.empty:
        return Skipped(name, title, "no per-example rows (examples table) for the reference slice")
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    attacks = [a for a in q.ATTACK_NAMES if a in set(df["attack"])]
    colors = method_colors(methods)
    fig, axes = _subplots(len(models), len(attacks), figsize=(4.3 * len(attacks) + 1.4, 3.6 * len(models)))
    logs = []
    for i, at in enumerate(attacks):
        for j, mo in enumerate(models):
            ax = axes[j][i]
            sub_all = df[(df["attack"] == at) & (df["model"] == mo)]
            nn = sub_all["min_nonmembers"].min() if not sub_all.empty else None
            floor = 1.0 / nn if nn and nn > 0 else 1e-3
            log = floor <= 0.01
            logs.append(log)
            for me in methods:
                sub = sub_all[(sub_all["method"] == me) & (sub_all["fpr"] >= floor * (1 - 1e-9))].sort_values("fpr")
                if sub.empty:
                    continue
                f, t = sub["fpr"].to_numpy(float), sub["tpr"].to_numpy(float)
                if log:
                    t = np.clip(t, floor, 1)
                ax.step(f, t, where="post", color=colors[me], lw=1.4, label=me)
                k = methods.index(me)
                for f0 in ROC_BARS:
                    if f0 < floor:
                        continue
                    near = np.argmin(np.abs(np.log(f) - np.log(f0)))
                    if abs(f[near] / f0 - 1) > 0.02:
                        continue
                    yv = t[near]
                    lo, hi = sub["tpr_lo"].to_numpy(float)[near], sub["tpr_hi"].to_numpy(float)[near]
                    if log:
                        lo, hi = max(lo, floor), max(hi, floor)
                    xd = f0 * (1.0 + 0.12 * (k - (len(methods) - 1) / 2)) if log else f0 + 0.01 * (k - (len(methods) - 1) / 2)
                    ax.errorbar([xd], [yv], yerr=[[max(yv - lo, 0)], [max(hi - yv, 0)]], color=colors[me], fmt="o",
                                markersize=3, capsize=2, elinewidth=0.9)
            grid = np.geomspace(floor, 1, 50) if log else np.linspace(0, 1, 3)
            ax.plot(grid, grid, color="0.5", lw=0.8, ls=":")
            ax.axvline(floor, color="0.3", lw=0.8, ls="--")
            ax.text(floor, 0.97, f" FPR floor 1/{int(nn) if nn else 1000}", fontsize=7.5, color="0.3", va="top",
                    transform=ax.get_xaxis_transform())
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlim(floor * 0.8, 1.05)
                ax.set_ylim(floor * 0.8, 1.1)
            else:
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1.02)
            ax.set_title(f"{mo}: {q.ATTACK_NAMES[at]}" + (" (log-log)" if log else " (linear: FPR floor > 1%)"))
            ax.set_xlabel("false-positive rate (unseen non-members)")
            ax.set_ylabel("true-positive rate (forget set)")
    _legend(fig, colors, methods)
    nm = ("held-out non-members (P_eval)" if heldout else
          "test non-members of the same class(es) (this store has no held-out population rows)")
    cap = (f"Empirical ROC between the forget set and {nm}, at the reference slice; curves are the mean over seeds; "
           "bars at FPR 0.01 and 0.1 are 95% intervals. Dashed: the FPR floor 1/(number of scored non-members), the "
           "smallest non-zero FPR the data can resolve; nothing is drawn left of it. Log-log axes only where the "
           f"floor is at most 1%. Dotted: chance. {note}")
    return Figure(name, title, fig, cap, _roc_takeaway(df))


def _per_model(head: str, models: Iterable[str], clause: Callable[[str], str | None]) -> str:
    """A takeaway sentence: `head`, then the clause of every model that has something to say."""
    parts = [c for mo in sorted(models) if (c := clause(mo))]
    return f"{head}: " + "; ".join(parts) + "." if parts else ""


def _roc_takeaway(df: pd.DataFrame) -> str:
    def clause(mo: str) -> str | None:
        sub = df[(df["attack"] == "paper-mlp") & (df["model"] == mo)]
        if sub.empty:
            return None
        nn = sub["min_nonmembers"].min()
        floor = 1.0 / nn if nn and nn > 0 else 1e-3
        f0 = 0.01 if floor <= 0.01 else 0.1
        gap = (sub["fpr"] - f0).abs()
        at = sub.loc[gap <= gap.min() + 1e-12]
        vals = {r.method: float(r.tpr) for r in at.itertuples()}
        if "none" not in vals:
            return None
        lo = at.loc[at["method"] == "none", "tpr_lo"].iloc[0]
        if _isnull(lo) or lo <= f0:  # a TPR no better than its FPR is chance, not leakage
            return (f"on {mo} at FPR {f0:g} the held-out attack is no better than chance on the original model's "
                    f"forget set (TPR {vals['none']:.2f}, its interval reaching down to the chance level {f0:g}; its "
                    "AUC and the other attacks are in the tables)")
        s = f"on {mo} at FPR {f0:g} (floor {floor:.3f}) the attack finds {vals['none']:.2f} of the original model's forget set"
        return s + (f" and {vals['retrain']:.2f} after retrain" if "retrain" in vals else "")
    return _per_model("ROC", df["model"].unique(), clause)


# ------------------------------------------------------------------------------------------------ cost
def fig_cost(df: pd.DataFrame, ratio: pd.DataFrame, ratio_what: str, note: str) -> Figure | Skipped:
    """df: aggregate by (model, method) at the reference slice; ratio: seed_mean of cost_ratio_cells by
    (model, method). Panels: cost ratio to retrain (circuits, wall time), then absolute costs that were spent."""
    name, title = "cost", "Cost of unlearning against retraining"
    if df.empty:
        return Skipped(name, title, "no ok cells")
    panels: list[tuple[str, str, str, pd.DataFrame]] = []
    if not ratio.empty:
        for m, lab in (("circuit_ratio", "circuits / retrain's"), ("seconds_ratio", "wall time / retrain's")):
            if _has(ratio, m):
                panels.append((m, lab, "ratio (1 = as costly as retraining)", ratio))
    dev = "unlearn_circuits_device" if _has(df, "unlearn_circuits_device") else "unlearn_circuits"
    for m, lab, unit in ((dev, label(dev), "circuits"), ("unlearn_seconds", "unlearn (or retrain) wall time",
                                                           "seconds"),
                         ("unlearn_shots_total", "unlearn shots", "shots"), ("qpu_seconds", "QPU time", "seconds")):
        if m in df and (pd.to_numeric(df[m], errors="coerce").fillna(0) > 0).any():
            panels.append((m, lab, unit, df))
    if not panels:  # e.g. a method that costs nothing, and no retrain to compare it with
        return Skipped(name, title, "no unlearning cost was spent at this slice")
    models = sorted(df["model"].unique())
    methods = [m for m in q.sort_axis("method", df["method"].unique()) if m != "none"]
    colors = method_colors(methods)
    fig, axes = _subplots(len(models), len(panels), figsize=(3.4 * len(panels) + 0.4, 3.1 * len(models)))
    for j, mo in enumerate(models):
        for i, (m, lab, unit, d) in enumerate(panels):
            ax = axes[j][i]
            ms = [me for me in methods if not d[(d["model"] == mo) & (d["method"] == me)].empty]
            sub = d[d["model"] == mo].set_index("method").reindex(ms).reset_index()
            y = _col(sub, m)
            e = _err(y, _col(sub, f"{m}_lo"), _col(sub, f"{m}_hi"))
            e = np.where(np.isnan(e), 0, e)
            ax.bar(range(len(ms)), np.nan_to_num(y), color=[colors[me] for me in ms], yerr=e if e.any() else None,
                   capsize=2, error_kw={"elinewidth": 0.9})
            for x, v in enumerate(y):
                if not np.isnan(v):
                    ax.text(x, v, f"{v:.2g}" if m.endswith("ratio") else "", ha="center", va="bottom", fontsize=7.5)
            pos = y[y > 0]
            if len(pos) and pos.max() / pos.min() > 30:
                ax.set_yscale("log")
            if m.endswith("ratio"):
                ax.axhline(1.0, color="0.2", lw=0.9, ls="--")
            ax.set_xticks(range(len(ms)))
            ax.set_xticklabels(ms, rotation=35, ha="right")
            ax.set_ylabel(unit)
            ax.set_title(f"{mo}: {lab}")
    if any(p[0].endswith("ratio") for p in panels):
        vs = (f"Ratios divide a method's unlearning cost by its matching `retrain` cell's (training from scratch on "
              f"the retain set), counted in {ratio_what}; the dashed line at 1 is the cost of retraining.")
    else:  # e.g. a grid without `retrain`: absolute costs only
        title, vs = "Cost of unlearning", "No `retrain` cell matches these cells, so no ratio to retraining is drawn."
    cap = (f"Unlearning cost per cell at the reference slice, means over seeds with 95% intervals. {vs} Log axis "
           f"where values span more than 30x. {note}")
    return Figure(name, title, fig, cap, _cost_takeaway(ratio, ratio_what))


def _cost_takeaway(ratio: pd.DataFrame, what: str) -> str:
    if ratio.empty or not _has(ratio, "circuit_ratio"):
        return ""
    def clause(mo: str) -> str | None:
        sub = ratio[ratio["model"] == mo]
        vals = [f"{r.method} {float(r.circuit_ratio):.2g}x" for r in sub.itertuples() if not _isnull(r.circuit_ratio)]
        return f"{mo}: {', '.join(vals)}" if vals else None
    unit = "device circuits" if "device" in what.split("(")[0] else "circuits"
    return _per_model(f"Unlearning cost as a share of retraining ({unit})", ratio["model"].unique(), clause)


# ------------------------------------------------------------------------------------------------ Pareto
def pareto_front(leak: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates: lower leak and higher `good` are better (NaN: never on it)."""
    ok = ~(np.isnan(leak) | np.isnan(good))
    front = np.zeros(len(leak), bool)
    for i in np.flatnonzero(ok):
        better = ok & (leak <= leak[i]) & (good >= good[i]) & ((leak < leak[i]) | (good > good[i]))
        front[i] = not better.any()
    return front


PARETO_PANELS = (("acc_test_retain", "retained-class test accuracy", False),
                 ("circuit_ratio", "device circuits / retrain's (log)", True))


def fig_pareto(df: pd.DataFrame, note: str) -> Figure | Skipped:
    """df: per (model, forget, method) seed means with intervals of `best_tpr_at_1pct_fpr` (the strongest
    attack's), `acc_test_retain`, `circuit_ratio` and, where U-LiRA ran, `ulira_accuracy`."""
    name, title = "pareto", "Leakage against retained accuracy and cost: the Pareto front"
    if df.empty or not _has(df, "best_tpr_at_1pct_fpr"):
        return Skipped(name, title, "no cell has a TPR at 1% FPR for any attack")
    leaks = [("best_tpr_at_1pct_fpr", "strongest attack's TPR@1%FPR")]
    if _has(df, "ulira_accuracy"):
        leaks.append(("ulira_accuracy", "U-LiRA accuracy (0.5 = chance)"))
    panels = [(lk, ll, gx, gl, logx) for lk, ll in leaks for gx, gl, logx in PARETO_PANELS if _has(df, gx)]
    slices = list(df[["model", "forget"]].drop_duplicates().itertuples(index=False, name=None))
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    fig, axes = _subplots(len(slices), len(panels), figsize=(3.6 * len(panels) + 0.4, 3.3 * len(slices)))
    fronts: dict[tuple[str, str], list[str]] = {}
    for j, (mo, fo) in enumerate(slices):
        sub = df[(df["model"] == mo) & (df["forget"] == fo)]
        for i, (lk, ll, gx, gl, logx) in enumerate(panels):
            ax = axes[j][i]
            d = sub.dropna(subset=[lk, gx])
            if gx == "circuit_ratio":
                d = d[d[gx] > 0]
            if d.empty:
                ax.text(0.5, 0.5, f"no {ll} at this slice\n(NULL: the data cannot resolve it)", ha="center",
                        va="center", fontsize=8, transform=ax.transAxes, color="0.3")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{mo}, {fo}")
                continue
            leak, x = _col(d, lk), _col(d, gx)
            # U-LiRA's leakage is the distance from chance: 0.4 tells unlearned from retrained as well as 0.6
            worse = np.abs(leak - 0.5) if lk == "ulira_accuracy" else leak
            # the original model is drawn for reference but is no unlearning method: it never makes the front
            front = pareto_front(np.where(d["method"] == "none", np.nan, worse), -x if gx == "circuit_ratio" else x)
            if lk == "best_tpr_at_1pct_fpr" and gx == "acc_test_retain":
                fronts[(mo, fo)] = list(d["method"][front])
            for k, r in enumerate(d.itertuples()):
                ax.errorbar([x[k]], [leak[k]], yerr=_err(leak[k:k + 1], _col(d, f"{lk}_lo")[k:k + 1],
                                                         _col(d, f"{lk}_hi")[k:k + 1]),
                            fmt="o", color=colors[r.method], markersize=7 if front[k] else 5,
                            markeredgecolor="black" if front[k] else "none", capsize=2, zorder=3)
                ax.annotate(str(r.method), (x[k], leak[k]), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
            if front.sum() > 1:
                order = np.argsort(x[front])
                ax.plot(x[front][order], leak[front][order], color="0.3", lw=0.9, ls="--", zorder=1)
            if logx:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(gl)
            ax.set_ylabel(ll)
            ax.set_title(f"{mo}, {fo}")
    _legend(fig, colors, methods)
    cap = ("Each method's mean over seeds (95% intervals on the leakage): leakage (up: worse) against retained-class "
           "test accuracy (right: better) and against device cost as a share of retraining (left: cheaper). Methods "
           "with a black edge are on the Pareto front (no other method leaks less and is at least as good on the x "
           "axis), joined by the dashed line; the original model (`none`) is drawn for reference and never on the "
           "front." + (" U-LiRA's leakage is its accuracy's distance from 0.5, either way: an accuracy of 0.4 tells "
                       "the unlearned model from a retrained one as well as 0.6 does." if len(leaks) > 1 else "")
           + f" {note}")
    return Figure(name, title, fig, cap, _pareto_takeaway(fronts))


def _pareto_takeaway(fronts: dict[tuple[str, str], list[str]]) -> str:
    parts = [f"{mo} {fo}: {join_words(sorted(ms))}" for (mo, fo), ms in fronts.items() if ms]
    return ("On the front of leakage (strongest attack's TPR@1%FPR) against retained accuracy: " + "; ".join(parts)
            + ".") if parts else ""


# ------------------------------------------------------------------------------------------------ vs retrain
CLOSE_METRICS = (("js_forget", "JS distance to retrain, forget set", "distance (0 = same outputs)"),
                 ("js_test", "JS distance to retrain, test set", "distance (0 = same outputs)"),
                 ("forget_quality", "loss KS p, seeds combined", "p-value (log)"),
                 ("privleak", "privleak: AUC gap to retrain", "relative change (0 = retrain)"))


def fig_closeness(df: pd.DataFrame, note: str, floor: pd.DataFrame | None = None,
                  stopped: set[tuple[str, str]] | None = None) -> Figure | Skipped:
    """df: seed_mean of closeness_cells by (model, method) at the reference slice; floor: seed_mean of
    floor_cells by model there (drawn as a band on the distance panels)."""
    name, title = "closeness_to_retrain", "Closeness to retrain"
    if df.empty:
        return Skipped(name, title, "no method has a matching `retrain` cell with per-example output probabilities")
    panels = [p for p in CLOSE_METRICS if _has(df, p[0])]
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    fig, axes = _subplots(len(models), len(panels), figsize=(3.4 * len(panels) + 0.4, 3.1 * len(models)))
    for j, mo in enumerate(models):
        sub = df[df["model"] == mo].set_index("method")
        ms = [m for m in methods if m in sub.index]
        for i, (m, lab, unit) in enumerate(panels):
            ax = axes[j][i]
            y, lo, hi = (np.array([sub.loc[me].get(k, np.nan) for me in ms], float) for k in (m, f"{m}_lo", f"{m}_hi"))
            if m == "forget_quality":  # log axis: only a p-value of exactly 0 (or an interval end below 0) is cut
                pos = np.r_[y, lo][np.r_[y, lo] > 0]
                cut = pos.min() / 10 if len(pos) else 1e-12
                zero = y <= 0
                lo = np.where(np.isnan(lo), y, np.maximum(lo, cut))
                y = np.where(zero, cut, y)
            for k, me in enumerate(ms):
                ax.errorbar([k], y[k:k + 1], yerr=_err(y[k:k + 1], lo[k:k + 1], hi[k:k + 1]), fmt="o",
                            color=colors[me], markersize=6, capsize=2.5)
            if m == "forget_quality":
                ax.scatter(np.flatnonzero(zero), y[zero], marker="v", s=40, color="0.2", zorder=3,
                           label="p = 0 (drawn at the axis floor)")
                ax.set_yscale("log")
                ax.axhline(0.05, color="0.3", lw=0.9, ls="--")
                ax.text(len(ms) - 0.5, 0.05, "0.05", fontsize=7, va="top", ha="right", color="0.3")
                ax.set_ylim(None, 1.5)
            elif m == "privleak":
                ax.axhline(0.0, color="0.3", lw=0.9, ls="--")
            else:
                top = _draw_floor(ax, floor, mo, m)
                ax.set_ylim(0, max(1e-3, np.nanmax(np.r_[hi, y, top])) * 1.15)
            ax.set_xticks(range(len(ms)))
            ax.set_xticklabels(ms, rotation=35, ha="right")
            ax.set_xlim(-0.6, len(ms) - 0.4)
            ax.set_ylabel(unit)
            ax.set_title(f"{mo}: {lab}")
    cap = ("Each method against the `retrain` cell with the same model, forget set, shots, seed and backend, on the "
           "same samples: mean Jensen-Shannon distance (base 2) of the 10 output probabilities; loss KS, the "
           "KS test between the two models' per-example forget-set losses, its p-values of the seeds combined by "
           "Fisher's method (above the dashed 0.05: no difference detected); privleak of the held-out attack AUC "
           "(0 = retrain's leakage; below 0 = over-unlearned). Means over seeds with 95% t intervals (the combined "
           f"p has none); a p-value of exactly 0 is drawn at the axis floor as a triangle. "
           + ("The grey band is the noise floor: one retrained model against another with a different "
              "initialisation, its mean (dotted) up to its upper 95% bound; a method inside it is as close to "
              "retrain as retraining is to itself. " if floor is not None and not floor.empty else "") + note)
    return Figure(name, title, fig, cap, _close_takeaway(df, floor, stopped or set()))


def _draw_floor(ax: Any, floor: pd.DataFrame | None, model: str, metric: str) -> float:
    """The retrain-to-retrain band of `metric` for `model`; returns its top (NaN when there is none)."""
    row = floor[floor["model"] == model] if floor is not None and not floor.empty and metric in floor else None
    if row is None or row.empty or _isnull(row[metric].iloc[0]):
        return float("nan")
    mean, top = float(row[metric].iloc[0]), float(row[f"{metric}_hi"].fillna(row[metric]).iloc[0])
    ax.axhspan(0, top, color="0.85", zorder=0, label="retrain-to-retrain floor")
    ax.axhline(mean, color="0.45", lw=0.9, ls=":", zorder=1)
    return top


def _close_takeaway(df: pd.DataFrame, floor: pd.DataFrame | None = None,
                    stopped: set[tuple[str, str]] = frozenset()) -> str:
    """stopped: (model, method) flagged as stopped early (the verdict table's "no result"), named as such."""
    def name(mo: str, m: str) -> str:
        return f"{m} (stopped early: no result)" if (mo, m) in stopped else m

    def within(mo: str, sub: pd.DataFrame) -> str:
        row = floor[floor["model"] == mo] if floor is not None and not floor.empty else None
        if row is None or row.empty or _isnull(row["js_forget"].iloc[0]):
            return ""
        top = float(row["js_forget_hi"].fillna(row["js_forget"]).iloc[0])
        inside = [name(mo, r.method) for r in sub.itertuples() if r.js_forget <= top]
        out = (f"; within the retrain-to-retrain floor (JS ≤ {top:.2f}): {join_words(inside)}" if inside
               else f"; no method lies within the retrain-to-retrain floor (JS ≤ {top:.2f})")
        ks = row["loss_ks"].iloc[0] if "loss_ks" in row else float("nan")
        if not _isnull(ks):  # a KS test against one retrain also separates two retrains when this is large
            out += f"; two retrained models already lie a loss KS statistic of {ks:.2f} apart"
        return out

    def clause(mo: str) -> str | None:
        sub = df[(df["model"] == mo) & (df["method"] != "none")].dropna(subset=["js_forget"])
        if sub.empty:
            return None
        best, worst = sub.loc[sub["js_forget"].idxmin()], sub.loc[sub["js_forget"].idxmax()]
        s = (f"on {mo} the outputs closest to retrain's on the forget set are {name(mo, best['method'])}'s "
             f"(JS {best['js_forget']:.2f})")
        if worst["method"] != best["method"]:
            s += f", the farthest {name(mo, worst['method'])}'s ({worst['js_forget']:.2f})"
        s += within(mo, sub)
        if _has(sub, "forget_quality"):
            ok = [name(mo, r.method) for r in sub.itertuples()
                  if not _isnull(r.forget_quality) and r.forget_quality >= 0.05]
            s += (f"; loss KS detects no difference from retrain for {join_words(ok)} (Fisher p ≥ 0.05)" if ok
                  else "; loss KS tells every method's forget losses from retrain's (Fisher p < 0.05)")
        return s
    return _per_model("Closeness", df["model"].unique(), clause)


def fig_collateral(change: pd.DataFrame, conf: pd.DataFrame, note: str) -> Figure | Skipped:
    """change: mean accuracy change vs retrain by (model, method, label); conf: mean share of the forget set
    predicted as each digit by (model, method, prediction). One row of two heatmaps per model."""
    name, title = "collateral_damage", "Collateral damage and where the forgotten class goes"
    if change.empty and conf.empty:
        return Skipped(name, title, "no class forget set with matching `retrain` cells at the reference slice")
    models = sorted(set(change.get("model", pd.Series(dtype=str))) | set(conf.get("model", pd.Series(dtype=str))))
    ncols = int(not change.empty) + int(not conf.empty)
    fig, axes = _subplots(len(models), ncols, figsize=(5.4 * ncols + 0.4, 0.38 * 7 * len(models) + 1.3 * len(models)))
    for j, mo in enumerate(models):
        i = 0
        if not change.empty:
            sub = change[change["model"] == mo]
            piv = sub.pivot_table(index="method", columns="label", values="acc_change") * 100
            piv = piv.reindex([m for m in q.sort_axis("method", piv.index) if m in piv.index])
            lim = max(5.0, float(np.nanmax(np.abs(piv.to_numpy()))) if piv.size else 5.0)
            sns.heatmap(piv, ax=axes[j][i], cmap="RdBu", center=0, vmin=-lim, vmax=lim, annot=True, fmt=".0f",
                        annot_kws={"fontsize": 7}, cbar_kws={"label": "points vs retrain"})
            axes[j][i].set_title(f"{mo}: test accuracy per retained class − retrain's")
            axes[j][i].set_xlabel("digit (test set)")
            axes[j][i].set_ylabel("method")
            axes[j][i].tick_params(axis="y", rotation=0)  # seaborn turns crowded labels vertical, into each other
            i += 1
        if not conf.empty:
            sub = conf[conf["model"] == mo]
            piv = sub.pivot_table(index="method", columns="prediction", values="share", fill_value=0.0) * 100
            piv = piv.reindex([m for m in q.sort_axis("method", piv.index) if m in piv.index])
            # every digit a column, also one that no forget sample was predicted as (a 0% column says so)
            if len(piv.columns):
                piv = piv.reindex(columns=range(max(10, int(piv.columns.max()) + 1)), fill_value=0.0)
            cls = ", ".join(sorted({str(f).split(":")[1] for f in sub["forget"]}))
            sns.heatmap(piv, ax=axes[j][i], cmap="Blues", vmin=0, vmax=100, annot=True, fmt=".0f",
                        annot_kws={"fontsize": 7}, cbar_kws={"label": "% of forget set"})
            axes[j][i].set_title(f"{mo}: predictions for the forgotten {cls}s (forget set)")
            axes[j][i].set_xlabel("predicted digit")
            axes[j][i].set_ylabel("method")
            axes[j][i].tick_params(axis="y", rotation=0)
    cap = ("Left: per retained class, the test accuracy of each method minus that of the matching `retrain` cell, "
           "in percentage points (blue = better than retrain, red = worse), mean over seeds. Right: the share of the "
           f"forget set (training samples of the forgotten class) predicted as each digit, in %. {note}")
    return Figure(name, title, fig, cap, _collateral_takeaway(change, conf))


def _collateral_takeaway(change: pd.DataFrame, conf: pd.DataFrame) -> str:
    def clause(mo: str) -> str | None:
        sub = change[(change["model"] == mo) & (change["method"] != "none")]
        if sub.empty:
            return None
        worst = sub.loc[sub["acc_change"].idxmin()]
        s = f"on {mo} the largest collateral loss is {worst['method']}'s on digit {int(worst['label'])} " \
            f"({worst['acc_change'] * 100:+.0f} points against retrain)"
        c = conf[(conf["model"] == mo)] if not conf.empty else conf
        for me in ("retrain", worst["method"]):
            cm = c[c["method"] == me] if not c.empty else c
            if len(cm):
                top = cm.loc[cm["share"].idxmax()]
                s += f"; after {me} the forgotten class goes mostly to {int(top['prediction'])} ({top['share'] * 100:.0f}%)"
        return s
    return _per_model("Collateral damage", set(change.get("model", pd.Series(dtype=str))), clause)


TRAJ = (("forget_acc", "forget-set accuracy"), ("retain_acc", "retain-set accuracy"),
        ("test_acc", "test accuracy"), ("loss_auc", "loss-attack AUC"))


def fig_trajectory(df: pd.DataFrame, note: str) -> Figure | Skipped:
    """df: long rows of `queries.trajectories` (model, method, seed, step, ...) for the iterative methods."""
    name, title = "unlearning_trajectory", "Unlearning trajectories"
    if df.empty:
        return Skipped(name, title, "no cell logged an unlearning trajectory")
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    lines = [(c, lab) for c, lab in TRAJ if _has(df, c)]
    pal = dict(zip([c for c, _ in TRAJ], sns.color_palette("deep", len(TRAJ))))
    fig, axes = _subplots(len(models), len(methods), figsize=(3.8 * len(methods) + 1.8, 3.0 * len(models)),
                          sharey=True)
    for j, mo in enumerate(models):
        for i, me in enumerate(methods):
            ax = axes[j][i]
            sub = df[(df["model"] == mo) & (df["method"] == me)]
            for seed, g in sub.groupby("seed"):
                g = g.sort_values("step")
                for c, lab in lines:
                    ax.plot(g["step"], pd.to_numeric(g[c], errors="coerce"), color=pal[c], lw=1.3, alpha=0.9,
                            marker="o", markersize=2.5, label=lab if seed == sub["seed"].min() else None)
            ax.axhline(CHANCE_ACC, color="0.5", lw=0.8, ls=":")
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{mo}: {me}, per step")
            ax.set_xlabel("unlearning step (optimiser steps)")
            if i == 0:
                ax.set_ylabel("accuracy or AUC (fraction)")
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=pal[c], label=lab) for c, lab in lines], loc="outside right center",
               frameon=False)
    cap = ("Forget-set, retain-set and test accuracy and the loss attack's AUC, logged every few steps of the "
           f"iterative methods (one line per seed). Dotted: chance accuracy 0.1. {note}")
    parts = []
    for (mo, me), g in df.groupby(["model", "method"]):
        g = g.sort_values(["step", "seed"], kind="stable")  # seeds log the same steps: the lowest seed first
        hit = g[pd.to_numeric(g["forget_acc"], errors="coerce") <= 0.1]
        if len(hit):
            r = hit.iloc[0]
            at = f"{me} on {mo} reaches forget accuracy ≤ 0.1 at step {int(r['step'])} (seed {int(r['seed'])})"
            parts.append(at + ("" if _isnull(r.get("retain_acc")) else
                               f" with retain accuracy {float(r['retain_acc']):.2f}"))
        elif len(g):
            r = g.iloc[-1]
            parts.append(f"{me} on {mo} ends at forget accuracy {float(r['forget_acc']):.2f} after "
                         f"{int(r['step'])} steps (seed {int(r['seed'])})")
    take = ("Trajectories: " + "; ".join(parts) + ".") if parts else ""
    return Figure(name, title, fig, cap, take)


# ------------------------------------------------------------------------------------------------ compare
def fig_compare(df: pd.DataFrame, da: str, db: str) -> Figure | Skipped:
    name, title = "compare", f"{da} against {db}"
    both = df.dropna(subset=["mia_success_a", "mia_success_b"], how="any") if not df.empty else df
    if both.empty:
        return Skipped(name, title, "no (model, forget, method, shots) combination has ok cells on both sides")
    methods = q.sort_axis("method", both["method"].unique())
    models = sorted(both["model"].unique())
    colors = method_colors(methods)
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    panels = [("mia_success", "MIA success (study protocol)"), ("mia_auc", "attack AUC"),
              ("acc_test_retain", "accuracy, test (retained classes)")]
    fig, axes = _subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.4, 3.6))
    for j, (m, lab) in enumerate(panels):
        ax = axes[0][j]
        for _, r in both.iterrows():
            x, y = r[f"{m}_a"], r[f"{m}_b"]
            if _isnull(x) or _isnull(y):
                continue
            xe = _err(np.array([x]), np.array([r[f"{m}_lo_a"]], float), np.array([r[f"{m}_hi_a"]], float))
            ye = _err(np.array([y]), np.array([r[f"{m}_lo_b"]], float), np.array([r[f"{m}_hi_b"]], float))
            ax.errorbar([x], [y], xerr=xe, yerr=ye, fmt=markers[r["model"]], color=colors[r["method"]], markersize=5.5,
                        capsize=2, elinewidth=0.8, markeredgecolor="white", markeredgewidth=0.5)
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":")
        ax.set_xlim(-0.04, 1.04)
        ax.set_ylim(-0.04, 1.04)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{da} (fraction)")
        ax.set_ylabel(f"{db} (fraction)")
        ax.set_title(f"{', '.join(models)}: {lab}")
    _legend(fig, colors, methods)
    cap = (f"Each point is one (model, forget, method, shots) combination present on both sides, {da} on x and {db} "
           "on y, with 95% intervals on both. Dotted: equality.")
    d = pd.to_numeric(both["mia_success_delta"], errors="coerce").dropna()
    take = (f"{db} against {da}: MIA success differs by {d.mean():+.2f} on average over {len(d)} matched "
            "combinations." if len(d) else "")
    return Figure(name, title, fig, cap, take)


def save(f: Figure, figdir) -> dict[str, Any]:
    png, svg = figdir / f"{f.name}.png", figdir / f"{f.name}.svg"
    f.fig.savefig(png)
    f.fig.savefig(svg)
    plt.close(f.fig)
    return {"png": png, "svg": svg}
