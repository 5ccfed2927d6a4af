"""Unlearning, attacks and metrics of one cell (workloads only, no Ray)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from workloads import metrics
from workloads.cell import CellConfig, attack_stage, evaluate_stage, run_cell, stage_specs, train_stage, unlearn_stage
from workloads.inference import logits_on

FAST = {"hqnn-l1": {"epochs": 10}, "attack": {"epochs": 300}}


@pytest.fixture(scope="module")
def digits_cells():
    """hqnn-l1 on digits (300 train), forget class 4: every method evaluated exactly."""
    base = CellConfig("hqnn-l1", "class:4", "none", None, None, None, 0, dataset="digits", n_train=300, n_test=200)
    base = base.with_params(FAST)
    train = train_stage(base)
    attack = attack_stage(base, train.state)
    rows = {}
    for method in ("none", "retrain", "finetune", "ga", "ssd", "rga"):
        cfg = replace(base, method=method)
        un = unlearn_stage(cfg, train.state)
        costs = {"train": train.cost, "unlearn": un.cost, "attack": attack.cost}
        rows[method] = evaluate_stage(cfg, train.state, un.state, attack.state, costs)
    return base, train, attack, rows


def test_original_model_leaks_and_unlearning_removes_it(digits_cells):
    _, _, _, rows = digits_cells
    none = rows["none"][0]
    assert none["mia_success"] >= 0.8
    assert none["acc_train_forget"] >= 0.9
    for method in ("retrain", "ga", "ssd", "rga"):
        row = rows[method][0]
        assert row["mia_success"] <= 0.1, method
        assert row["acc_train_forget"] <= 0.15, method
        assert row["acc_test_retain"] >= none["acc_test_retain"] - 0.15, method
    assert rows["ga"][0]["unlearn_steps"] > 0
    assert 0 < rows["ssd"][0]["ssd_dampened_fraction"] < 0.1


def test_row_and_examples_carry_the_contract_columns(digits_cells):
    _, _, _, rows = digits_cells
    row, ex = rows["none"]
    for col in ("mia_success", "mia_success_lo", "mia_success_hi", "mia_auc", "mia_tpr_at_1pct_fpr",
                "mia_tpr_at_01pct_fpr", "acc_train_retain", "acc_train_forget", "acc_test_retain", "acc_test_forget",
                "train_seconds", "unlearn_seconds", "eval_seconds", "circuit_executions", "shots_total", "qpu_seconds"):
        assert col in row and row[col] is not None, col
    assert row["mia_success_lo"] <= row["mia_success"] <= row["mia_success_hi"]
    assert list(ex.columns) == ["split", "sample_index", "label", "prediction", "loss", "attack_score"]
    assert len(ex) == 500 and set(ex.split) == {"train_retain", "train_forget", "test"}
    assert (ex[ex.split == "train_forget"].label == 4).all()
    flagged = (ex[ex.split == "train_forget"].attack_score >= 0.5).mean()
    assert flagged == pytest.approx(row["mia_success"])


def test_cells_share_stages_by_spec(digits_cells):
    base = digits_cells[0]
    a, b = stage_specs(replace(base, method="ga")), stage_specs(replace(base, method="ssd", eval_shots=128))
    assert a["train"] == b["train"] and a["unlearn"] != b["unlearn"] and a["attack"] != b["attack"]
    c = stage_specs(replace(base, method="retrain", unlearn_shots=64))
    assert c["unlearn"] == stage_specs(replace(base, method="retrain"))["unlearn"]  # retrain trains at train_shots


def test_finite_eval_shots_blur_what_the_attack_sees(digits_cells):
    base, train, _, _ = digits_cells
    from workloads.cell import _model, cell_data

    data = cell_data(base)
    model = _model(base, data, train.state)
    exact, _ = logits_on(model, data.x_test, None, "torch", 0)
    spreads = {}
    for shots in (16, 1024):
        a, cost = logits_on(model, data.x_test, shots, "torch", 1)
        b, _ = logits_on(model, data.x_test, shots, "torch", 2)
        assert not torch.equal(a, b)
        assert cost["shots"] == shots * len(data.x_test)
        spreads[shots] = (a - exact).std().item()
    # Error of a mean of S shots shrinks like 1/sqrt(S): 64x the shots -> about 8x less spread.
    assert 4 < spreads[16] / spreads[1024] < 16
    again, _ = logits_on(model, data.x_test, 16, "torch", 1)
    assert torch.equal(again, logits_on(model, data.x_test, 16, "torch", 1)[0])


def test_random_forgetting_and_reproducible_cells():
    cfg = CellConfig("qnn-angle-l2", "random:30", "ga", None, None, 64, 3, dataset="digits", n_train=200, n_test=100)
    cfg = cfg.with_params({"qnn-angle-l2": {"epochs": 5}, "attack": {"epochs": 100}})
    row1, ex1 = run_cell(cfg)
    row2, ex2 = run_cell(cfg)
    assert row1["n_forget"] == 30 and np.isnan(row1["acc_test_forget"])
    timing = {k for k in row1 if k.endswith("seconds")}
    assert {k: v for k, v in row1.items() if k not in timing} == pytest.approx(
        {k: v for k, v in row2.items() if k not in timing}, nan_ok=True)
    assert ex1.equals(ex2)


def test_wilson_interval_and_tpr_at_low_fpr():
    p, lo, hi = metrics.wilson_interval(9, 10)
    assert p == 0.9 and 0.59 < lo < 0.6 and 0.98 < hi < 0.99
    assert metrics.wilson_interval(0, 50)[1] == 0.0
    members, nonmembers = np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85])
    assert metrics.auc(members, nonmembers) == pytest.approx(7 / 9)
    assert metrics.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(1 / 3)


@pytest.mark.slow
def test_mnist_hqnn_acceptance():
    """Issue 4 acceptance on MNIST, hqnn-l1, class:4, seed 0, exact shots."""
    base = CellConfig("hqnn-l1", "class:4", "none", None, None, None, 0)
    train = train_stage(base)
    attack = attack_stage(base, train.state)
    rows = {}
    for method in ("none", "ga", "ssd", "rga"):
        cfg = replace(base, method=method)
        un = unlearn_stage(cfg, train.state)
        rows[method] = evaluate_stage(cfg, train.state, un.state, attack.state,
                                      {"train": train.cost, "unlearn": un.cost, "attack": attack.cost})[0]
    assert rows["none"]["mia_success"] >= 0.8 and rows["none"]["acc_test_retain"] >= 0.88
    for method in ("ga", "ssd", "rga"):
        assert rows[method]["mia_success"] <= 0.10, method
    assert rows["none"]["acc_test_retain"] - rows["rga"]["acc_test_retain"] <= 0.05


def test_lira_with_shadows_scores_members_of_an_overfit_model():
    cfg = CellConfig("hqnn-l1", "random:40", "none", None, None, None, 0, dataset="digits", n_train=200, n_test=100)
    cfg = cfg.with_params({"hqnn-l1": {"epochs": 6}, "attack": {"epochs": 50}, "lira": {"shadows": 3}})
    row, _ = run_cell(cfg)
    for key in ("lira_auc", "lira_tpr_at_1pct_fpr", "lira_tpr_at_01pct_fpr"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["lira_auc"] > 0.5  # members sit above the OUT shadows' confidence
    off, _ = run_cell(cfg.with_params({"hqnn-l1": {"epochs": 6}, "attack": {"epochs": 50}}))
    assert "lira_auc" not in off


def test_n_eval_subsamples_each_split_with_original_indices():
    cfg = CellConfig("qnn-angle-l2", "class:4", "none", None, None, 64, 0, dataset="digits", n_train=200, n_test=100,
                     n_eval=12).with_params({"qnn-angle-l2": {"epochs": 2}, "attack": {"epochs": 50}})
    row, ex = run_cell(cfg)
    counts = ex.split.value_counts().to_dict()
    assert counts == {"train_retain": 12, "train_forget": 12, "test": 12}
    assert row["n_forget_evaluated"] == 12 and row["n_forget"] > 12
    assert ex[ex.split != "test"].sample_index.max() > 12  # original training indices, not positions
    assert (ex[ex.split == "train_forget"].label == 4).all()
    assert stage_specs(cfg)["evaluate"]["n_eval"] == 12 and "n_eval" not in stage_specs(replace(cfg, n_eval=None))["evaluate"]
    with pytest.raises(ValueError, match="n_eval"):
        replace(cfg, n_eval=3).validate()
