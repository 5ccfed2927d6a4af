"""Seaborn/matplotlib figures drawn from the DataFrames of `reports.queries` (no numbers are computed here).

Each `fig_*` function returns a `Figure` (with a caption) or a `Skipped` (with the reason), so a grid whose
axis has a single value, or no ok cells, still gets a report that says why the figure is absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import queries as q  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
LABELS = {m: lab for m, (lab, _, _) in q.METRICS.items()}
LABELS.update({f"gap_{m}": f"{LABELS[m]} - retrain" for m in q.GAP_METRICS})


@dataclass
class Figure:
    name: str
    title: str
    fig: Any
    caption: str


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
    pal = sns.color_palette("colorblind", len(known))
    colors = dict(zip(known, pal))
    colors["retrain"] = (0.15, 0.15, 0.15)
    return colors


def model_markers(models: Sequence[str]) -> dict[str, str]:
    return {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}


def shots_label(v: Any) -> str:
    return "exact" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def _isnull(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _err(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo = np.where(np.isnan(lo), y, lo)
    hi = np.where(np.isnan(hi), y, hi)
    return np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])


def _col(df: pd.DataFrame, c: str) -> np.ndarray:
    return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)


PANEL_W, LEGEND_W = 4.3, 1.5


def _subplots(nrows: int, ncols: int, **kw):
    return plt.subplots(nrows, ncols, layout="constrained", **kw)


def _legend(fig, colors: dict[str, Any], methods: Sequence[str], markers: dict[str, str] | None = None,
            extra: list[tuple[Any, str]] | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="*" if m == "retrain" else "o", linestyle="-",
                      markersize=9 if m == "retrain" else 6, label=m) for m in methods]
    if markers and len(markers) > 1:
        handles.append(Line2D([], [], linestyle="", label=""))
        handles += [Line2D([], [], color="0.35", marker=mk, linestyle="", label=mo) for mo, mk in markers.items()]
    for h, lab in extra or []:
        handles.append(h)
    fig.legend(handles=handles, loc="outside right center", frameon=False, title="method")


def _finish(fig) -> None:
    """Layout is constrained (set at creation), so nothing to do; kept as the one place to change it."""


# ------------------------------------------------------------------------------------------------ leakage
def fig_leakage(df: pd.DataFrame, note: str) -> Figure | Skipped:
    """df: aggregate by (forget, model, method) at the reference shots."""
    title = "Leakage against accuracy"
    if df.empty:
        return Skipped("leakage_vs_accuracy", title, "no ok cells at the reference slice")
    forgets = q.sort_axis("forget", df["forget"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    models = sorted(df["model"].unique())
    colors, markers = method_colors(methods), model_markers(models)
    cols = [("mia_success", "MIA success on the forget set"), ("mia_auc", "attack AUC (forget vs same-class test)")]
    fig, axes = _subplots(len(forgets), len(cols), figsize=(PANEL_W * len(cols) + LEGEND_W, 3.3 * len(forgets)),
                          squeeze=False, sharex=True)
    for i, fo in enumerate(forgets):
        sub = df[df["forget"] == fo]
        n = sub["n_forget"].dropna()
        for j, (m, ylab) in enumerate(cols):
            ax = axes[i][j]
            for _, r in sub.iterrows():
                x, y = r["acc_test_retain"], r[m]
                if _isnull(x) or _isnull(y):
                    continue
                xe = _err(np.array([x]), np.array([r["acc_test_retain_lo"]], float), np.array([r["acc_test_retain_hi"]], float))
                ye = _err(np.array([y]), np.array([r[f"{m}_lo"]], float), np.array([r[f"{m}_hi"]], float))
                is_rt, is_none = r["method"] == "retrain", r["method"] == "none"
                # `none` is drawn larger and underneath, so a method that did not move (e.g. finetune) stays visible
                ax.errorbar([x], [y], xerr=xe, yerr=ye, fmt="*" if is_rt else markers[r["model"]],
                            color=colors[r["method"]], markersize=13 if is_rt else 11 if is_none else 7, capsize=2.5,
                            elinewidth=1, markeredgecolor="black" if is_rt else "white", markeredgewidth=0.6,
                            zorder=4 if is_rt else 2 if is_none else 3)
                if is_rt and len(models) > 1:
                    ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(7, -11 if y > 0.85 else 5),
                                fontsize=7.5)
            if m == "mia_auc":
                ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
            ax.set_ylim(-0.04, 1.04)
            ax.set_ylabel(ylab)
            ax.set_title(f"forget {fo}" + (f" (n={n.iloc[0]:.0f})" if len(n) else ""))
            if i == len(forgets) - 1:
                ax.set_xlabel("accuracy, test (retained classes)")
    _legend(fig, colors, methods, markers)
    _finish(fig)
    cap = ("One point per method x model at the reference shots; the star is `retrain` (the target); `none` (the "
           "original model) is the larger marker drawn underneath. Bars are 95% "
           "intervals. Dotted line: AUC 0.5 (chance). " + note)
    return Figure("leakage_vs_accuracy", title, fig, cap)


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
    """df: aggregate by (model, method, axis). One column per model, one row per metric, line per method."""
    vals = {_key(v) for v in df[axis]} if not df.empty else set()
    if len(vals) < 2:
        return Skipped(name, title, f"`{axis}` has a single value in this grid"
                       + (f" ({shots_label(next(iter(vals)))})" if vals else "") + "; nothing to plot against")
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    pos, sep = _shot_positions(list(vals))
    fig, axes = _subplots(len(models), len(metrics), figsize=(PANEL_W * len(metrics) + LEGEND_W, 3.0 * len(models)),
                          squeeze=False, sharex=True)
    n_methods = max(len(methods), 1)
    for j, mo in enumerate(models):
        for i, m in enumerate(metrics):
            ax = axes[j][i]
            for k, me in enumerate(methods):
                sub = df[(df["model"] == mo) & (df["method"] == me)].copy()
                if sub.empty:
                    continue
                sub["_x"] = [pos[_key(v)] for v in sub[axis]]
                sub = sub.sort_values("_x")
                y = _col(sub, m)
                if np.all(np.isnan(y)):
                    continue
                # a small multiplicative dodge so overlapping methods stay readable
                x = sub["_x"].to_numpy(float) * (1.0 + 0.06 * (k - (n_methods - 1) / 2) / n_methods * 2)
                fin = np.array([not _isnull(v) for v in sub[axis]])
                e = _err(y, _col(sub, f"{m}_lo"), _col(sub, f"{m}_hi"))
                ax.errorbar(x[fin], y[fin], yerr=e[:, fin], color=colors[me], marker="o", markersize=4.5, lw=1.3,
                            capsize=2, elinewidth=0.9)
                if (~fin).any():
                    ax.errorbar(x[~fin], y[~fin], yerr=e[:, ~fin], color=colors[me], marker="D", markersize=5,
                                linestyle="", capsize=2, elinewidth=0.9)
            if df[df["model"] == mo][m].isna().all():
                ax.text(0.5, 0.5, "no retrain cells: no gap" if m.startswith("gap_") else "not recorded",
                        ha="center", va="center", transform=ax.transAxes, color="0.3")
            ax.set_xscale("log")
            ticks = sorted(pos.items(), key=lambda kv: kv[1])
            ax.set_xticks([p for _, p in ticks])
            ax.set_xticklabels([shots_label(v) for v, _ in ticks], rotation=0)
            ax.minorticks_off()
            if sep is not None:
                ax.axvline(sep, color="0.4", lw=0.8, ls=(0, (2, 2)))
            lo, hi = min(pos.values()), max(pos.values())
            ax.set_xlim(lo / 1.6, hi * 1.6)
            if m in q.BOUNDED or m.startswith("gap_"):
                ax.set_ylim((-1.04, 1.04) if m.startswith("gap_") else (-0.04, 1.04))
            ax.set_ylabel(LABELS.get(m, m))
            ax.set_title(mo)
            if j == len(models) - 1:
                ax.set_xlabel(axis.replace("_", " ") + " (log; exact apart)")
    _legend(fig, colors, methods)
    _finish(fig)
    cap = f"Metrics against `{axis}` (log axis; `exact`, i.e. analytic, is drawn apart as a diamond). " \
          f"Bars are 95% intervals; methods are dodged slightly along x. {note}"
    return Figure(name, title, fig, cap)


# ------------------------------------------------------------------------------------------------ forget size
def fig_forget(df: pd.DataFrame, metrics: Sequence[str], note: str) -> Figure | Skipped:
    name, title = "forget_set_size", "Forget-set size"
    forgets = q.sort_axis("forget", df["forget"].unique()) if not df.empty else []
    if len(forgets) < 2:
        return Skipped(name, title, "`forget` has a single value in this grid"
                       + (f" ({forgets[0]})" if forgets else "") + "; nothing to compare")
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    colors = method_colors(methods)
    xpos = {f: i for i, f in enumerate(forgets)}
    sizes = df.groupby("forget")["n_forget"].mean()
    labels = [f"{f}\n(n={sizes.get(f):.0f})" if not _isnull(sizes.get(f)) else f for f in forgets]
    fig, axes = _subplots(len(models), len(metrics), figsize=(max(PANEL_W, 1.1 * len(forgets) + 1.5) * len(metrics)
                                                              + LEGEND_W, 3.0 * len(models)), squeeze=False, sharex=True)
    for j, mo in enumerate(models):
        for i, m in enumerate(metrics):
            ax = axes[j][i]
            for k, me in enumerate(methods):
                sub = df[(df["model"] == mo) & (df["method"] == me)]
                if sub.empty:
                    continue
                x = np.array([xpos[f] for f in sub["forget"]], float) + (k - (len(methods) - 1) / 2) * 0.6 / len(methods)
                y = _col(sub, m)
                ax.errorbar(x, y, yerr=_err(y, _col(sub, f"{m}_lo"), _col(sub, f"{m}_hi")), color=colors[me],
                            marker="o", markersize=4.5, lw=1.1, capsize=2, elinewidth=0.9)
            if df[df["model"] == mo][m].isna().all():
                ax.text(0.5, 0.5, "no retrain cells: no gap" if m.startswith("gap_") else "not recorded",
                        ha="center", va="center", transform=ax.transAxes, color="0.3")
            ax.set_xticks(range(len(forgets)))
            ax.set_xticklabels(labels)
            ax.set_xlim(-0.5, len(forgets) - 0.5)
            if m in q.BOUNDED or m.startswith("gap_"):
                ax.set_ylim((-1.04, 1.04) if m.startswith("gap_") else (-0.04, 1.04))
            ax.set_ylabel(LABELS.get(m, m))
            ax.set_title(mo)
            if j == len(models) - 1:
                ax.set_xlabel("forget set")
    _legend(fig, colors, methods)
    _finish(fig)
    cap = "Metrics per forget set (random:N ordered by N, then class:K; n = forget-set size). Bars are 95% " \
          f"intervals; methods are dodged slightly along x. {note}"
    return Figure(name, title, fig, cap)


# ------------------------------------------------------------------------------------------------ ROC
ROC_BARS = (0.01, 0.1)

def fig_roc(df: pd.DataFrame, note: str) -> Figure | Skipped:
    name, title = "roc", "ROC of the attacks at low FPR"
    if df.empty:
        return Skipped(name, title, "no per-example rows (examples table) for the reference slice")
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    attacks = [a for a in ("paper-mlp", "loss") if a in set(df["attack"])]
    colors = method_colors(methods)
    floor = 1e-3
    fig, axes = _subplots(len(models), len(attacks), figsize=(PANEL_W * len(attacks) + LEGEND_W, 3.6 * len(models)),
                          squeeze=False)
    for i, at in enumerate(attacks):
        for j, mo in enumerate(models):
            ax = axes[j][i]
            sub_all = df[(df["attack"] == at) & (df["model"] == mo)]
            for me in methods:
                sub = sub_all[sub_all["method"] == me].sort_values("fpr")
                if sub.empty:
                    continue
                f = sub["fpr"].to_numpy(float)
                t = np.clip(sub["tpr"].to_numpy(float), floor, 1)
                ax.step(f, t, where="post", color=colors[me], lw=1.4, label=me)
                # 95% intervals at a few FPRs (bands of several methods would hide each other)
                k = methods.index(me)
                for f0 in ROC_BARS:
                    near = np.argmin(np.abs(np.log(f) - np.log(f0)))
                    if abs(f[near] / f0 - 1) > 0.02:
                        continue
                    yv = np.clip(sub["tpr"].to_numpy(float)[near], floor, 1)
                    lo = np.clip(sub["tpr_lo"].to_numpy(float)[near], floor, 1)
                    hi = np.clip(sub["tpr_hi"].to_numpy(float)[near], floor, 1)
                    xd = f0 * (1.0 + 0.12 * (k - (len(methods) - 1) / 2))
                    ax.errorbar([xd], [yv], yerr=[[max(yv - lo, 0)], [max(hi - yv, 0)]], color=colors[me], fmt="o",
                                markersize=3, capsize=2, elinewidth=0.9)
            grid = np.geomspace(floor, 1, 50)
            ax.plot(grid, grid, color="0.5", lw=0.8, ls=":")
            nn = sub_all["min_nonmembers"].min() if not sub_all.empty else None
            if nn and nn > 0:
                ax.axvline(1.0 / nn, color="0.3", lw=0.8, ls="--")
                ax.text(1.0 / nn, floor * 1.3, f" 1/{int(nn)}", fontsize=7.5, color="0.3")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(floor, 1.05)
            ax.set_ylim(floor * 0.8, 1.2)
            ax.set_title(f"{mo}: {'paper MLP attack' if at == 'paper-mlp' else 'loss attack'}")
            ax.set_xlabel("FPR (same-class test non-members)")
            ax.set_ylabel("TPR (forget-set members)")
    _legend(fig, colors, methods)
    _finish(fig)
    cap = ("Empirical ROC between forget-set members and test non-members of the same class(es), log-log, at the "
           "reference slice; curves are the mean over seeds; bars at FPR 0.01 and 0.1 are 95% intervals (t over "
           "seeds, or Wilson on TPR for one seed). TPR of 0 is drawn at the 1e-3 floor. Dashed line: 1/(number of non-members), the smallest non-zero FPR the "
           f"data can resolve; left of it the curve is TPR at zero false positives. Dotted: chance. {note}")
    return Figure(name, title, fig, cap)


# ------------------------------------------------------------------------------------------------ cost
COST_METRICS = (("unlearn_seconds", "unlearn (or retrain) wall s"), ("unlearn_circuits", "unlearn circuit executions"),
                ("unlearn_shots_total", "unlearn shots"), ("eval_seconds", "evaluate wall s"),
                ("qpu_seconds", "QPU s"))


def fig_cost(df: pd.DataFrame, note: str) -> Figure | Skipped:
    name, title = "cost", "Cost per method"
    if df.empty:
        return Skipped(name, title, "no ok cells")
    panels = [(m, lab) for m, lab in COST_METRICS if m in df and (m != "qpu_seconds" or (df[m].fillna(0) > 0).any())]
    models = sorted(df["model"].unique())
    methods = q.sort_axis("method", df["method"].unique())
    pal = dict(zip(models, sns.color_palette("deep", len(models))))
    fig, axes = _subplots(1, len(panels), figsize=(3.3 * len(panels) + 0.6, 3.3), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for j, (m, lab) in enumerate(panels):
        ax = axes[0][j]
        vals = _col(df, m)
        if not np.any(np.nan_to_num(vals) > 0):
            ax.text(0.5, 0.5, "all zero\n(exact: no shots)" if "shots" in m else "all zero / not recorded",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3")
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels(methods, rotation=40, ha="right")
            ax.set_yticks([])
            ax.set_title(lab)
            continue
        for k, mo in enumerate(models):
            sub = df[df["model"] == mo].set_index("method").reindex(methods)
            y = _col(sub.reset_index(), m)
            x = np.arange(len(methods)) + (k - (len(models) - 1) / 2) * width
            e = _err(y, _col(sub.reset_index(), f"{m}_lo"), _col(sub.reset_index(), f"{m}_hi"))
            yp = np.where(y > 0, y, np.nan)
            e = np.where(np.isnan(yp), 0, e)
            ax.bar(x, yp, width=width * 0.95, color=pal[mo], label=mo, yerr=e if e.any() else None,
                   capsize=2, error_kw={"elinewidth": 0.9})
            for xi, yi in zip(x, y):
                if not np.isnan(yi) and yi <= 0:
                    ax.text(xi, 0.02, "0", transform=ax.get_xaxis_transform(), ha="center", fontsize=7.5, color="0.3")
        pos = vals[vals > 0]
        if len(pos) and pos.max() / pos.min() > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, None)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=40, ha="right")
        ax.set_title(lab)
    from matplotlib.patches import Patch

    if True:
        fig.legend(handles=[Patch(color=pal[mo], label=mo) for mo in models], loc="outside right center",
                   frameon=False, title="model")
    _finish(fig)
    cap = ("Mean cost per cell at the reference slice (log axis where values span more than 20x; 0 written where "
           "nothing was spent, e.g. `none`). "
           "`retrain` counts its training from scratch. Bars: 95% interval over seeds (none with one seed). " + note)
    return Figure(name, title, fig, cap)


# ------------------------------------------------------------------------------------------------ compare
def fig_compare(df: pd.DataFrame, da: str, db: str) -> Figure | Skipped:
    name, title = "compare", f"{da} against {db}"
    both = df.dropna(subset=["mia_success_a", "mia_success_b"], how="any") if not df.empty else df
    if both.empty:
        return Skipped(name, title, "no (model, forget, method, shots) combination has ok cells on both sides")
    methods = q.sort_axis("method", both["method"].unique())
    models = sorted(both["model"].unique())
    colors, markers = method_colors(methods), model_markers(models)
    panels = [("mia_success", "MIA success"), ("mia_auc", "attack AUC"), ("acc_test_retain", "acc. test (retained)")]
    fig, axes = _subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, 3.6), squeeze=False)
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
        ax.set_xlabel(f"{lab}: {da}")
        ax.set_ylabel(f"{lab}: {db}")
    _legend(fig, colors, methods, markers)
    _finish(fig)
    cap = (f"Each point is one (model, forget, method, shots) combination present on both sides, {da} on x and {db} "
           "on y, with 95% intervals on both. Dotted: equality.")
    return Figure(name, title, fig, cap)


def save(f: Figure, figdir) -> dict[str, Any]:
    png, svg = figdir / f"{f.name}.png", figdir / f"{f.name}.svg"
    f.fig.savefig(png)
    f.fig.savefig(svg)
    plt.close(f.fig)
    return {"png": png, "svg": svg}
