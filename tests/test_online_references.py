"""Online references (`references: {mode: online}`): each scored sample (the target's train set and P_eval) is
IN exactly half of the references and P_attack is in none; online LiRA and RMIA tell an overfit model's
members from held-out non-members, with scores of their own; a bad mode is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from workloads import metrics
from workloads.stages import (CellConfig, attack_stage, evaluate_stage, reference_config, reference_group_stage,
                              reference_member_roles, reference_members, reference_stage, train_stage,
                              unlearn_stage)

K = 4
# n_test 900 leaves 299 samples in P_eval, so an online reference trains on 299 samples, as many as the target
# (docs/data.md): LiRA's IN and OUT Gaussians are those of a model trained like the target. 15 epochs overfit
# enough for the loss attack to reach AUC 0.63 on the whole train set (with n_train 600 and 4 epochs it was
# 0.51, and no attack can beat a model that does not tell its members apart).
BASE = CellConfig("hqnn-l1", "random:150", "none", None, None, None, 0, dataset="digits", n_train=300, n_test=900)


def _cfg(mode: str, base: CellConfig = BASE) -> CellConfig:
    return base.with_params({base.model: {"epochs": 15}, "attack": {"epochs": 50},
                             "references": {"k": K, "mode": mode}})


def test_each_scored_sample_is_in_half_of_the_online_references() -> None:
    cfg = _cfg("online", CellConfig("qnn-angle-l2", "class:4", "none", None, None, None, 0, dataset="digits",
                                    n_train=200, n_test=100)).with_params(
        {"qnn-angle-l2": {"epochs": 1}, "references": {"k": K, "mode": "online"}})
    held = [reference_member_roles(r.state) for r in reference_group_stage([reference_config(cfg, i) for i in range(K)])]
    assert all(set(h) == {"train", "eval"} for h in held)  # P_attack (RMIA's population) is in none
    for role, n in (("train", 200), ("eval", 749)):
        counts = np.zeros(n, int)
        for h in held:
            counts[h[role]] += 1
        assert (counts == K // 2).all(), role  # complementary pairs: IN exactly half, OUT the other half
    first = np.isin(np.arange(200), held[0]["train"])
    assert 0.4 < first.mean() < 0.6  # a random half of the train set, not a block of it
    assert reference_members(949, 0, 0, "online").tolist() != reference_members(949, 1, 0, "online").tolist()
    offline = reference_config(cfg.with_params({"qnn-angle-l2": {"epochs": 1}, "references": {"k": K}}), 0)
    assert set(reference_member_roles(reference_stage(offline).state)) == {"attack"}  # offline: P_attack only


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[dict, object]]:
    """(row, examples) of the untouched model under offline and under online references."""
    train = train_stage(_cfg("offline"))
    out = {}
    for mode in ("offline", "online"):
        cfg = _cfg(mode)
        refs = [r.state for r in reference_group_stage([reference_config(cfg, i) for i in range(K)])]
        un = unlearn_stage(cfg, train.state)
        attack = attack_stage(cfg, train.state, *refs)
        out[mode] = evaluate_stage(cfg, train.state, un.state, attack.state,
                                   costs={"train": train.cost, "unlearn": un.cost, "attack": attack.cost})
    return out


@pytest.mark.slow  # about two minutes on 2 loaded cores
def test_online_lira_and_rmia_separate_members_and_differ_from_offline(runs) -> None:
    online, offline = runs["online"], runs["offline"]
    row, ex = online
    for attack in ("lira", "rmia"):
        assert row[f"{attack}_auc"] > 0.55, (attack, row[f"{attack}_auc"])  # 150 members: standard error 0.03
        forget, pop = ex[ex.split == "train_forget"], ex[ex.split == "population"]
        assert metrics.auc(forget[f"{attack}_score"], pop[f"{attack}_score"]) == pytest.approx(row[f"{attack}_auc"])
        assert not np.allclose(ex[f"{attack}_score"].fillna(0), offline[1][f"{attack}_score"].fillna(0))
    assert row["references_mode"] == "online" and offline[0]["references_mode"] == "offline"
    assert np.isnan(row["rmia_offline_a"]) and not np.isnan(offline[0]["rmia_offline_a"])  # no a online


GRID = """\
name: bad
dataset: digits
grid:
  model: [hqnn-l1]
  forget: ["class:4"]
  method: [none]
  seed: [0]
params:
  references: {k: 4, mode: %s}
"""


@pytest.mark.parametrize("mode,expect", [("both", "params.references.mode: expected one of offline, online, got 'both'"),
                                         ("online", None)])
def test_a_bad_mode_exits_2_with_one_line(tmp_path: Path, mode: str, expect: str | None) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID % mode)
    res = CliRunner().invoke(app, ["run", str(grid), "--dry-run", "--results", str(tmp_path / "r")], prog_name="qmu")
    if expect is None:  # the valid online grid plans
        assert res.exit_code == 0, res.output
        return
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], res.output


def test_online_needs_two_references_on_each_side(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text((GRID % "online").replace("k: 4", "k: 2"))
    res = CliRunner().invoke(app, ["run", str(grid), "--dry-run", "--results", str(tmp_path / "r")], prog_name="qmu")
    assert res.exit_code == 2 and "params.references.k: mode online needs at least 4 references, got 2" in res.output
