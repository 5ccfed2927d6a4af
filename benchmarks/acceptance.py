"""The audit's and the unlearning methods' acceptance numbers, read from a results store.

Prints, for the given grid (MNIST, exact training):
1. held-out attack AUC of `none` at exact outputs and at 8,192 shots, per model, forget set and seed, with
   Hanley-McNeil 95% intervals, and whether the two intervals overlap;
2. RMIA and LiRA against the loss attack on `none` (AUC per seed, and the mean over seeds with a t interval);
3. the FPR floor of each forget set and how many 0.1%-FPR TPRs are NULL (unresolvable) or not;
4. per model and method on class:4 at exact outputs, mean over seeds: forget-train accuracy, retained test
   accuracy and its drop from `none`, held-out and RMIA AUC, device-circuit cost as a share of `retrain`,
   relearn steps.

Usage: python benchmarks/acceptance.py RESULTS [--grid paper]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reports.queries import connect  # noqa: E402


def hanley_mcneil(auc: float, n_pos: float, n_neg: float) -> tuple[float, float]:
    """95% interval of an AUC from its two sample sizes (Hanley and McNeil 1982)."""
    if any(map(lambda v: v is None or (isinstance(v, float) and math.isnan(v)), (auc, n_pos, n_neg))):
        return math.nan, math.nan
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return auc - 1.96 * se, auc + 1.96 * se


def mean_ci(x: pd.Series) -> str:
    x = x.dropna().astype(float)
    if len(x) < 2:
        return f"{x.mean():.3f}" if len(x) else "NULL"
    h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return f"{x.mean():.3f} [{x.mean() - h:.3f}, {x.mean() + h:.3f}]"


def shots_agreement(cells: pd.DataFrame) -> pd.DataFrame:
    none = cells[(cells["method"] == "none") & cells["eval_shots"].isin(["exact", "8192"])]
    rows = []
    for (mo, fo, se), g in none.groupby(["model", "forget", "seed"]):
        r = {"model": mo, "forget": fo, "seed": se}
        for sh in ("exact", "8192"):
            c = g[g["eval_shots"] == sh]
            if len(c):
                c = c.iloc[0]
                lo, hi = hanley_mcneil(c["mia_auc"], c["n_forget"], c["n_nonmembers_scored"])
                r[f"auc_{sh}"], r[f"ci_{sh}"] = round(c["mia_auc"], 3), f"[{lo:.3f}, {hi:.3f}]"
                r[f"_lo_{sh}"], r[f"_hi_{sh}"] = lo, hi
        if "_lo_exact" in r and "_lo_8192" in r:
            r["overlap"] = r["_lo_exact"] <= r["_hi_8192"] and r["_lo_8192"] <= r["_hi_exact"]
        rows.append({k: v for k, v in r.items() if not k.startswith("_")})
    return pd.DataFrame(rows)


def attack_strength(cells: pd.DataFrame) -> pd.DataFrame:
    none = cells[(cells["method"] == "none") & (cells["eval_shots"] == "exact")]
    rows = []
    for (mo, fo), g in none.groupby(["model", "forget"]):
        rows.append({"model": mo, "forget": fo, "seeds": len(g),
                     "loss_auc": mean_ci(g["loss_auc"]), "heldout_auc": mean_ci(g["mia_auc"]),
                     "rmia_auc": mean_ci(g["rmia_auc"]), "lira_auc": mean_ci(g["lira_auc"]),
                     "rmia>=loss (seeds)": int((g["rmia_auc"] >= g["loss_auc"]).sum())})
    return pd.DataFrame(rows)


def floors(cells: pd.DataFrame) -> pd.DataFrame:
    g = cells.groupby("forget")
    return pd.DataFrame({"fpr_floor_min": g["mia_fpr_floor"].min(), "fpr_floor_max": g["mia_fpr_floor"].max(),
                         "tpr01_null": g["mia_tpr_at_01pct_fpr"].apply(lambda s: int(s.isna().sum())),
                         "tpr01_set": g["mia_tpr_at_01pct_fpr"].apply(lambda s: int(s.notna().sum())),
                         "tpr1_null": g["mia_tpr_at_1pct_fpr"].apply(lambda s: int(s.isna().sum()))}).reset_index()


def methods(cells: pd.DataFrame, forget: str) -> pd.DataFrame:
    c = cells[(cells["forget"] == forget) & (cells["eval_shots"] == "exact")].copy()
    key = ["model", "seed"]
    retrain = c[c["method"] == "retrain"].set_index(key)["unlearn_circuits_device"]
    none = c[c["method"] == "none"].set_index(key)["acc_test_retain"]
    c["cost_ratio"] = c["unlearn_circuits_device"].to_numpy() / retrain.reindex(c.set_index(key).index).to_numpy()
    c["acc_drop_pts"] = (none.reindex(c.set_index(key).index).to_numpy() - c["acc_test_retain"].to_numpy()) * 100
    rows = []
    for (mo, me), g in c.groupby(["model", "method"]):
        rows.append({"model": mo, "method": me, "seeds": len(g), "forget_acc": mean_ci(g["acc_train_forget"]),
                     "retained_test_acc": mean_ci(g["acc_test_retain"]), "drop_pts_max": round(g["acc_drop_pts"].max(), 1),
                     "heldout_auc": mean_ci(g["mia_auc"]), "rmia_auc": mean_ci(g["rmia_auc"]),
                     "cost_vs_retrain": mean_ci(g["cost_ratio"]), "relearn_steps": mean_ci(g["relearn_steps"])})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--grid", default="paper")
    ap.add_argument("--forget", default="class:4")
    a = ap.parse_args()
    s = connect(a.results)
    cells = s.df(f"SELECT * FROM cells WHERE status = 'ok' AND grid = '{a.grid}'")
    if cells.empty:
        sys.exit(f"{a.results}: no ok cells of grid {a.grid!r}")
    cells["eval_shots"] = cells["eval_shots"].map(lambda v: "exact" if pd.isna(v) else str(int(v)))
    pd.set_option("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 40)
    for title, df in (("held-out AUC of `none`, exact vs 8,192 shots (Hanley-McNeil 95%)", shots_agreement(cells)),
                      ("attack strength on `none`, exact outputs (mean over seeds, 95% t)", attack_strength(cells)),
                      ("FPR floors and unresolvable TPRs (all cells)", floors(cells)),
                      (f"methods on {a.forget}, exact outputs (mean over seeds, 95% t)", methods(cells, a.forget))):
        print(f"\n## {title}\n{df.to_string(index=False)}")


if __name__ == "__main__":
    main()
