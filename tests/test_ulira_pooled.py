"""U-LiRA's TPR at 1% FPR pooled over seeds: a seed's 50 forget samples give 50 retrained scores, too few for
1% (NULL per cell); three seeds' 150 resolve it. Synthetic scores with a known truth (unlearned N(mu, 1)
against retrained N(0, 1), so TPR@1% = 1 - Phi(z_0.99 - mu)), written with the store's writer and read back
through the report's DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_curve

N = 50


def _write(root: Path, shifts: dict[str, list[float]]) -> None:
    from harness.store import ResultStore
    from workloads.stages import catalog

    rs = ResultStore(str(root))
    ids = []
    for method, per_seed in shifts.items():
        for seed, mu in enumerate(per_seed):
            rng = np.random.default_rng([seed, len(method)])
            pos, neg = rng.normal(mu, 1, N), rng.normal(0, 1, N)
            ex = pd.DataFrame({"split": "train_forget", "sample_index": np.arange(N), "label": 4, "prediction": 4,
                               "loss": 0.1, "attack_score": 0.0, "ulira_score": pos, "ulira_score_retrained": neg})
            acc = float(np.r_[pos > 0, neg <= 0].mean())
            row = {"model": "qnn-l10", "forget": f"random:{N}", "method": method, "train_shots": None,
                   "unlearn_shots": None, "eval_shots": None, "seed": seed, "backend": "torch", "status": "ok",
                   "code_version": "test", "acc_test_retain": 0.107 if method == "none" else 0.9,
                   "ulira_accuracy": acc, "ulira_accuracy_lo": acc - 0.1,
                   "ulira_accuracy_hi": acc + 0.1, "ulira_tpr_at_1pct_fpr": np.nan, "ulira_fpr_floor": 1 / N}
            cid = f"{method}-{seed}"
            rs.write_cell("u", cid, row, ex)
            ids.append(cid)
    rs.write_manifest("u", {"grid": "u", "cells": ids, "code_version": "test", "catalog": catalog()})


def _pooled(root: Path, **filters) -> pd.DataFrame:
    from reports import queries as q

    s = q.connect(str(root))
    try:
        return q.ulira_pooled(s, {"grid": "u", **filters}).set_index("method")
    finally:
        s.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ulira_pooled")
    _write(root, {"none": [2.0] * 3, "retrain": [0.0] * 3, "ga": [0.0, 4.0, 0.0]})
    return root


def _sklearn_tpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    f, t, _ = roc_curve(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg], drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def test_pooled_tpr_equals_sklearn_on_the_pooled_scores_and_holds_the_truth(store) -> None:
    df = _pooled(store)
    none = df.loc["none"]
    assert none.n_pooled == 3 * N and none.pooled_fpr_floor == pytest.approx(1 / (3 * N))
    assert none.n_resolved == 0  # every seed alone is NULL
    # the cells of `none` are those with the unlearned shift 2; pool their scores and ask sklearn
    rng = [np.random.default_rng([s, 4]) for s in range(3)]
    pairs = [(r.normal(2.0, 1, N), r.normal(0, 1, N)) for r in rng]
    want = _sklearn_tpr(np.concatenate([p for p, _ in pairs]), np.concatenate([n for _, n in pairs]), 0.01)
    assert none.ulira_pooled_tpr == pytest.approx(want, abs=1e-12)
    truth = 1 - stats.norm.cdf(stats.norm.ppf(0.99) - 2.0)  # 0.372
    assert none.ulira_pooled_tpr_lo <= truth <= none.ulira_pooled_tpr_hi
    ret = df.loc["retrain"]
    assert ret.ulira_pooled_tpr_lo <= 0.01 <= ret.ulira_pooled_tpr_hi and ret.ulira_pooled_tpr_hi < truth


def test_interval_carries_the_seed_spread_and_never_undercuts_wilson(store) -> None:
    from reports import queries as q

    df = _pooled(store)
    s = q.connect(str(store))
    try:
        for method, r in df.iterrows():
            lo, hi = s.con.execute("SELECT wilson_lo($1, $2), wilson_hi($1, $2)",
                                   [r.ulira_pooled_tpr, int(r.n_pooled)]).fetchone()
            assert r.ulira_pooled_tpr_lo <= lo + 1e-12 and r.ulira_pooled_tpr_hi >= hi - 1e-12, method
    finally:
        s.close()
    # `ga` unlearned in two seeds of three (shift 0) and not in one (shift 4): resampling seeds must show it
    ga = df.loc["ga"]
    wilson_half = 1.96 * np.sqrt(ga.ulira_pooled_tpr * (1 - ga.ulira_pooled_tpr) / (3 * N))
    assert ga.ulira_pooled_tpr_hi - ga.ulira_pooled_tpr > wilson_half + 0.1


def test_one_seed_cannot_resolve_one_percent(store) -> None:
    df = _pooled(store, seed=0)
    assert df.loc["none"].n_pooled == N and pd.isna(df.loc["none"].ulira_pooled_tpr)


def test_report_prints_the_pooled_table(store, tmp_path) -> None:
    from reports.build import build_report

    md = (build_report(str(store), str(tmp_path / "r")).parent / "report.md").read_text()
    table = md.split("**U-LiRA: unlearned, or retrained?", 1)[1].split("\n\n", 2)[1]
    rows = {r.split("|")[3].strip(): r for r in table.strip().splitlines()[2:]}
    assert set(rows) == {"none", "retrain", "ga"}
    assert "NULL in 3 of 3 seeds" in rows["none"] and "150 / 0.0067" in rows["none"]
    df = _pooled(store)
    assert f"{df.loc['none'].ulira_pooled_tpr:.3f} [" in rows["none"]
    # its original model is at chance: the status section says its numbers mean nothing
    assert "The original qnn-l10 is at chance (retained-class test accuracy 0.107, chance 0.10)" in md
    findings = md.split("## Findings", 1)[1].split("\n## ", 1)[0]
    (ulira,) = [b for b in findings.splitlines() if "U-LiRA (per forget sample" in b]
    # the untouched model (accuracy about 0.74 in every seed) is told apart; ga, unlearned in two seeds of
    # three, has an interval that holds 0.5 and is not named
    assert f"qnn-l10 random:{N}: the original model;" in ulira and "ga" not in ulira.split("every other")[0]


def test_ulira_stays_out_of_the_membership_roc(store) -> None:
    """U-LiRA's scores exist on the forget set only (its negatives are a retrained model's); a ROC against
    P_eval non-members drew it as a flat line at TPR 0."""
    from reports import queries as q

    s = q.connect(str(store))
    try:
        attacks = set(q.roc(s, ["method"], {"grid": "u"}).attack)
    finally:
        s.close()
    assert attacks and "ulira" not in attacks and "ulira" not in q.SCORE_COLUMNS
