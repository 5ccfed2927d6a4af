"""U-LiRA's falsifiable sanity checks on a small hqnn-l1 grid (digits, class forgetting, 8 shadows): with
`retrain` as the "method" the attacker cannot tell the unlearned model from a retrained one (the interval
of its accuracy holds 0.5); with `none` it clearly can."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from workloads.stages import (CellConfig, attack_stage, evaluate_stage, replica_config, replica_stage, shadow_config,
                              shadow_stage, stage_specs, train_stage, ulira_stage, unlearn_stage)

BASE = CellConfig("hqnn-l1", "class:3", "none", None, None, None, 0, dataset="digits", n_train=300, n_test=100) \
    .with_params({"hqnn-l1": {"epochs": 15}, "attack": {"epochs": 50}, "ulira": {"k": 8}})


@pytest.fixture(scope="module")
def rows() -> dict[str, tuple[dict, object]]:
    train = train_stage(BASE)
    shadows = shadow_stage(shadow_config(BASE))  # one stage for every method
    replica = replica_stage(replica_config(BASE, 0))
    attack = attack_stage(BASE, train.state)
    out = {}
    for method in ("none", "retrain"):
        cfg = replace(BASE, method=method)
        un = unlearn_stage(cfg, train.state)
        ul = ulira_stage(cfg, shadows.state)
        out[method] = evaluate_stage(cfg, train.state, un.state, attack.state, replica.state, ul.state,
                                     costs={"train": train.cost, "unlearn": un.cost, "attack": attack.cost})
    return out


def test_retrain_is_indistinguishable_from_retraining(rows):
    row, _ = rows["retrain"]
    assert row["ulira_accuracy_lo"] <= 0.5 <= row["ulira_accuracy_hi"]
    assert row["ulira_k"] == 8


def test_the_untouched_model_is_told_apart(rows):
    row, ex = rows["none"]
    assert row["ulira_accuracy_lo"] > 0.5 and row["ulira_auc"] > 0.9
    forget = ex[ex.split == "train_forget"]
    assert forget.ulira_score.notna().all() and forget.ulira_score_retrained.notna().all()
    assert ex[ex.split != "train_forget"].ulira_score.isna().all()  # scored on the forget set only
    # a TPR at 1% FPR needs 100 retrained scores; 32 forget samples cannot resolve it: NULL
    assert row["ulira_fpr_floor"] > 0.01 and np.isnan(row["ulira_tpr_at_1pct_fpr"])


def test_shadow_pool_and_stages():
    specs = stage_specs(BASE)
    other = stage_specs(replace(BASE, method="ga", eval_shots=64))
    assert specs["shadow"] == other["shadow"]  # shared by every method and eval shot count
    assert specs["ulira"] != other["ulira"] and "shadow" not in specs["evaluate"]
    assert specs["replica.0"] == other["replica.0"]
    from workloads.attacks.ulira import shadow_members

    held = shadow_members(101, 0, 8)
    assert (held.sum(0) == 4).all()  # complementary pairs: each pool sample IN exactly half the shadows
    assert "shadow" not in stage_specs(BASE.with_params({"ulira": {"k": 0}}))
