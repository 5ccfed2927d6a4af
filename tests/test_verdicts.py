"""Verdicts on synthetic cells whose truth is known: attack scores of members N(mu, 1) against non-members
N(0, 1), so AUC = Phi(mu / sqrt(2)). Each seed draws its own samples (its own ids); the cells of one seed share
them, as a method's cell and its retrain cell share the forget set and the scored non-members."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from reports import verdicts as v
from workloads.metrics import tpr_at_fpr


def _mu(auc: float) -> float:
    return math.sqrt(2) * float(stats.norm.ppf(auc))


def _cells(auc: float, seeds: int, n1: int, n0: int, salt: int) -> list[v.Cell]:
    """One cell per seed; seed s uses samples s * 10**6 + 0..n1+n0 whatever the model (`salt` only varies the
    scores)."""
    out = []
    for s in range(seeds):
        rng = np.random.default_rng([salt, s])
        ids = s * 10**6 + np.arange(n1 + n0)
        out.append(v.Cell.of(rng.normal(_mu(auc), 1, n1), rng.normal(0, 1, n0), ids[:n1], ids[n1:]))
    return out


def _verdicts(method_auc: float, none_auc: float, seeds: int, n1: int, n0: int, n_boot: int = 300):
    """The verdicts of `none` and of a method against retrain (AUC 0.6) at one slice."""
    retrain = _cells(0.6, seeds, n1, n0, salt=1)
    comps = []
    for name, auc, salt in (("none", none_auc, 2), ("ga", method_auc, 3)):
        cells = _cells(auc, seeds, n1, n0, salt)
        est = {s: v.difference(cells, retrain, s, n_boot=n_boot) for s in v.SIGNALS}
        comps.append(v.Comparison(("m", "class:4", "paper-mlp"), name, est))
    none, method = v.judge(comps)
    return none, method


def test_equal_distributions_are_equivalent() -> None:
    none, method = _verdicts(method_auc=0.6, none_auc=0.8, seeds=8, n1=1000, n0=1000)
    assert none.verdict == v.DIFFERS
    assert method.verdict == v.EQUIVALENT, (method.p_equivalent, method.comparison.estimates)
    for s, e in method.comparison.estimates.items():
        lo, hi = e.interval(0.90)  # the TOST's interval lies inside the margin
        assert -v.Margins().of(s) < lo < hi < v.Margins().of(s)
        assert method.mde[s] < v.Margins().of(s)


def test_a_shift_of_one_tenth_in_auc_differs() -> None:
    none, method = _verdicts(method_auc=0.7, none_auc=0.8, seeds=5, n1=300, n0=300)
    assert method.verdict == v.DIFFERS
    auc = method.comparison.estimates["auc"]
    lo, hi = auc.interval()
    assert 0 < lo < 0.1 < hi


def test_two_seeds_of_twenty_samples_are_underpowered() -> None:
    none, method = _verdicts(method_auc=0.6, none_auc=0.95, seeds=2, n1=20, n0=20)
    assert method.verdict == v.UNDERPOWERED
    assert method.mde["auc"] > v.Margins().auc  # and it says how far from resolving the margin it is
    assert math.isnan(method.mde["tpr_at_1pct_fpr"])  # 20 non-members cannot resolve 1% FPR


def test_a_signal_that_cannot_tell_none_from_retrain_is_not_discriminating() -> None:
    none, method = _verdicts(method_auc=0.6, none_auc=0.6, seeds=8, n1=1000, n0=1000)
    assert none.verdict == v.NOT_DISCRIMINATING
    assert method.verdict == v.NOT_DISCRIMINATING  # the same method is "equivalent" where none leaks (above)


@pytest.mark.parametrize("tpr_zero", [False, True])
def test_identical_seeds_never_give_a_zero_width_interval(tpr_zero: bool) -> None:
    """Every seed the same pair of cells with method == retrain (every per-seed difference exactly 0, as the
    issue's "0.000 [0.00, 0.00]"): the interval is as wide as one cell's own, not zero. With `tpr_zero` the
    members all sit below the non-members' top 5%, so TPR@1%FPR is 0 in every cell and replicate."""
    rng = np.random.default_rng(7)
    n1, n0 = 100, 400
    nonmembers = rng.normal(0, 1, n0)
    members = rng.normal(_mu(0.6), 1, n1)
    if tpr_zero:
        members = np.minimum(members, np.quantile(nonmembers, 0.95))
    cell = v.Cell.of(members, nonmembers, np.arange(n1), n1 + np.arange(n0))
    assert (v.cell_value(cell, "tpr_at_1pct_fpr") == 0) == tpr_zero
    for s in v.SIGNALS:
        one = v.difference([cell], [cell], s, n_boot=200)
        three = v.difference([cell] * 3, [cell] * 3, s, n_boot=200)
        assert three.value == 0 and three.se_spread > 0 and np.std(three.per_seed) == 0
        width = np.diff(three.interval())[0]
        assert width > 0
        assert width >= np.diff(one.interval())[0]  # never narrower than the cell's own interval
    # the same seeds on samples of their own (no shared ids) still keep their cells' errors
    cells = [v.Cell.of(cell.scores[:n1], cell.scores[n1:], k * 10**6 + np.arange(n1), k * 10**6 + n1 + np.arange(n0))
             for k in range(3)]
    assert np.diff(v.difference(cells, cells, "auc", n_boot=200).interval())[0] > 0


def test_seed_spread_widens_the_interval_beyond_the_cells() -> None:
    """Seeds that really differ: the interval follows their spread (t, n - 1 dof), wider than the cells' alone."""
    retrain = _cells(0.6, 4, 300, 300, salt=1)
    method = [c for auc, k in zip((0.55, 0.75, 0.6, 0.7), range(4)) for c in _cells(auc, k + 1, 300, 300, 5)[k:k + 1]]
    e = v.difference(method, retrain, "auc", n_boot=300)
    assert e.se > e.se_sampling
    spread = np.std(e.per_seed, ddof=1) / 2
    assert e.se >= 0.9 * spread


def test_intervals_are_deterministic() -> None:
    a = _verdicts(0.62, 0.8, 3, 100, 200)
    b = _verdicts(0.62, 0.8, 3, 100, 200)
    def key(vs: list) -> list:
        return [(x.verdict, x.p_equivalent, x.p_differs, x.comparison.estimates["auc"].se) for x in vs]

    assert key(a) == key(b)


def test_cell_statistics_match_scikit_learn_and_workloads_metrics() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n1, n0 = int(rng.integers(5, 80)), int(rng.integers(5, 400))
        m, n = np.round(rng.normal(0.5, 1, n1), 1), np.round(rng.normal(0, 1, n0), 1)  # many ties
        c = v.Cell.of(m, n, np.arange(n1), n1 + np.arange(n0))
        assert v.cell_value(c, "auc") == pytest.approx(roc_auc_score(np.r_[np.ones(n1), np.zeros(n0)], np.r_[m, n]))
        t = v.cell_value(c, "tpr_at_1pct_fpr")
        assert (math.isnan(t) and n0 < 100) or t == pytest.approx(tpr_at_fpr(m, n, 0.01))


def test_tpr_at_fpr_keeps_tied_points_on_straight_stretches_of_the_roc() -> None:
    """Three tied groups of 1 non-member and 5 members put the ROC points (0.005, 0.05), (0.01, 0.10) and
    (0.015, 0.15) on one line; dropping the middle one (roc_curve's default) gave 0.05 at 1% FPR."""
    neg = np.r_[4.0, 3.0, 2.0, np.linspace(-5, 1, 197)]
    pos = np.r_[[4.0] * 5, [3.0] * 5, [2.0] * 5, np.linspace(-5, 1, 85)]
    assert tpr_at_fpr(pos, neg, 0.01) == pytest.approx(0.10)


def test_holm_step_down() -> None:
    # m = 4: 0.01 * 4, 0.02 * 3, 0.03 * 2 (then made monotone), 0.5 * 1; NaN is outside the family
    adj = v.holm([0.03, 0.01, float("nan"), 0.5, 0.02])
    assert adj[[1, 4, 0, 3]] == pytest.approx([0.04, 0.06, 0.06, 0.5])
    assert math.isnan(adj[2])


def test_holm_makes_a_family_of_verdicts_stricter() -> None:
    """A difference that stands alone no longer does beside forty more tests of the same strength."""
    retrain = _cells(0.6, 4, 400, 400, salt=1)
    est = {s: v.difference(_cells(0.7, 4, 400, 400, salt=3), retrain, s, n_boot=200) for s in v.SIGNALS}
    none = v.Comparison(("m",), "none", {s: v.difference(_cells(0.9, 4, 400, 400, salt=2), retrain, s, n_boot=200)
                                         for s in v.SIGNALS})
    alone = v.judge([none, v.Comparison(("m",), "ga", est)])
    crowd = v.judge([none, v.Comparison(("m",), "ga", est)] + [v.Comparison(("m",), f"x{i}", est) for i in range(40)])
    assert alone[1].verdict == v.DIFFERS
    assert crowd[1].verdict == v.UNDERPOWERED and crowd[1].p_differs > alone[1].p_differs


def test_loss_ks_combines_p_values_and_never_averages() -> None:
    rng = np.random.default_rng(0)
    same = [(rng.normal(0, 1, 100), rng.normal(0, 1, 100)) for _ in range(2)]
    shifted = (rng.normal(1.5, 1, 100), rng.normal(0, 1, 100))
    res = v.loss_ks([shifted, *same])
    ps = [stats.ks_2samp(u, r).pvalue for u, r in [shifted, *same]]
    assert res.pvalues == pytest.approx(ps)
    assert res.p_combined == pytest.approx(stats.combine_pvalues(ps, method="fisher").pvalue)
    assert np.mean(ps) > 0.05 > res.p_combined  # the mean would call it a pass
    assert res.statistic == pytest.approx(np.mean([stats.ks_2samp(u, r).statistic for u, r in [shifted, *same]]))
    st = v.loss_ks([shifted, *same], combine="stouffer")
    assert st.p_combined == pytest.approx(stats.combine_pvalues(ps, method="stouffer").pvalue)


def test_margins_are_checked() -> None:
    assert v.Margins().auc == 0.03 and v.Margins().tpr_at_1pct_fpr == 0.02
    with pytest.raises(ValueError, match="auc"):
        v.Margins(auc=0)


# ------------------------------------------------------------------------------------------------ from a store
STORE_AUC = {"none": 0.9, "retrain": 0.6, "ga": 0.6, "ssd": 0.8}


def _store_cells(seeds: int = 5, n1: int = 150, n0: int = 250) -> dict[tuple[str, int], dict]:
    """Per (method, seed): members and non-members drawn from a pool of 2,000 samples (so seeds share some)."""
    out = {}
    for s in range(seeds):
        pick = np.random.default_rng([9, s]).choice(2000, n1 + n0, replace=False)
        for k, (method, auc) in enumerate(STORE_AUC.items()):
            rng = np.random.default_rng([s, k])
            out[(method, s)] = {"members": rng.normal(_mu(auc), 1, n1), "nonmembers": rng.normal(0, 1, n0),
                                "member_ids": pick[:n1], "nonmember_ids": pick[n1:]}
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import pandas as pd

    from harness.store import ResultStore, connect_duckdb

    root = tmp_path_factory.mktemp("verdict_store")
    rs = ResultStore(str(root))
    data = _store_cells()
    for (method, s), d in data.items():
        n1, n0 = len(d["members"]), len(d["nonmembers"])
        score = np.r_[d["members"], d["nonmembers"]]
        ex = pd.DataFrame({"split": ["train_forget"] * n1 + ["population"] * n0,
                           "sample_index": np.r_[np.arange(n1), np.arange(n0)], "label": 4, "prediction": 4,
                           "loss": -score / 2, "attack_score": score,
                           "dataset_index": np.r_[d["member_ids"], d["nonmember_ids"]]})
        row = {"model": "m", "forget": "class:4", "method": method, "train_shots": None, "unlearn_shots": None,
               "eval_shots": None, "seed": s, "backend": "torch", "status": "ok", "code_version": "test"}
        rs.write_cell("g", f"{method}-{s}", row, ex)
    con = connect_duckdb(rs)
    yield con, data, root
    con.close()


def test_verdict_table_from_a_store_is_the_core_on_its_rows(store) -> None:
    con, data, root = store
    table = v.verdict_table(con, "g", n_boot=200)
    assert set(table["attack"]) == {"paper-mlp", "loss"} and set(table["method"]) == {"none", "ga", "ssd"}
    assert (table["n_tests"] == 2 * len(table)).all()
    by = {(r.attack, r.method): r for r in table.itertuples()}
    assert by[("paper-mlp", "none")].verdict == v.DIFFERS
    assert by[("paper-mlp", "ssd")].verdict == v.DIFFERS
    assert by[("paper-mlp", "ga")].verdict != v.DIFFERS
    # the table's numbers are the core's on the same arrays (scores, sample ids) read back from Parquet
    seeds = range(5)
    cells = {m: [v.Cell.of(**data[(m, s)]) for s in seeds] for m in STORE_AUC}
    resample = v.Resampler(np.r_[tuple(np.r_[d["member_ids"], d["nonmember_ids"]] for d in data.values())], 200)
    for m in ("none", "ga", "ssd"):
        for sig in v.SIGNALS:
            e = v.difference(cells[m], cells["retrain"], sig, n_boot=200, weights=resample)
            r = by[("paper-mlp", m)]
            assert getattr(r, f"d_{sig}") == pytest.approx(e.value)
            assert (getattr(r, f"d_{sig}_lo"), getattr(r, f"d_{sig}_hi")) == pytest.approx(e.interval())
            assert getattr(r, f"mde_{sig}") == pytest.approx(e.mde())
    # the report's connection (its narrower `examples` table beside the store's view) gives the same table
    from reports.queries import connect

    s = connect(str(root))
    try:
        assert v.verdict_table(s.con, "g", n_boot=200).equals(table)
    finally:
        s.close()
    # the loss attack scores -loss = score / 2: a monotone map, so the same AUCs
    assert by[("loss", "ssd")].d_auc == pytest.approx(by[("paper-mlp", "ssd")].d_auc)
    # one attack alone: the same differences, a family of its own
    loss = v.verdict_table(con, "g", n_boot=200, attacks={"loss": "loss"})
    assert set(loss["attack"]) == {"loss"} and (loss["n_tests"] == 6).all()
    assert loss["d_auc"].tolist() == pytest.approx(table[table["attack"] == "loss"]["d_auc"].tolist())


def test_loss_ks_table_combines_the_seeds(store) -> None:
    con, data, _ = store
    table = v.loss_ks_table(con, "g")
    row = table[table["method"] == "ssd"].iloc[0]
    pairs = [(-data[("ssd", s)]["members"] / 2, -data[("retrain", s)]["members"] / 2) for s in range(5)]
    ref = v.loss_ks(pairs)
    assert row["n_seeds"] == 5
    assert row["ks_statistic"] == pytest.approx(ref.statistic)
    assert row["p_combined"] == pytest.approx(ref.p_combined)


def test_one_seed_keeps_its_cells_interval_but_makes_no_claim() -> None:
    """One seed says nothing about seed-to-seed spread: the interval is the cells' own, the verdict underpowered."""
    retrain, method = _cells(0.6, 1, 2000, 2000, salt=1), _cells(0.9, 1, 2000, 2000, salt=3)
    est = {s: v.difference(method, retrain, s, n_boot=200) for s in v.SIGNALS}
    auc = est["auc"]
    own = math.hypot(v.cell_se(method[0], "auc"), v.cell_se(retrain[0], "auc"))
    assert auc.se == pytest.approx(max(own, np.std(v.replicates(method[0], "auc", 200)
                                                   - v.replicates(retrain[0], "auc", 200), ddof=1)))
    assert auc.interval() == pytest.approx((auc.value - v.Z95 * auc.se, auc.value + v.Z95 * auc.se))
    (verdict,) = v.judge([v.Comparison(("m",), "ga", est)])
    assert verdict.verdict == v.UNDERPOWERED and "fewer than 2 seeds" in verdict.note
    assert math.isnan(verdict.mde["auc"])
