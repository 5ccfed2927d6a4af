"""K models unlearned together (`unlearn_many`: ascents in lockstep) equal each unlearned alone (`unlearn`)."""

import numpy as np
import pytest
import torch

from workloads.data import load_split

from workloads.models import build_model, model_inputs
from workloads.models.training import as_labels, fit
from workloads.hparams import model_defaults, resolve_params
from workloads.unlearning import METHODS, UnlearnData, unlearn, unlearn_many

TOLERANCE = 1e-10


def _shadows(name: str, k: int):
    """K trained models and K unlearning problems of unequal sizes, as U-LiRA's shadows hold them."""
    split = load_split("digits", 160, 30, 0)
    x, _ = model_inputs(name, split)
    y = as_labels(split.y_train)
    models, datas = [], []
    for i in range(k):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(i))[: 60 + 10 * i]
        m = build_model(name, 30 + i, 8)
        fit(m, x[idx], y[idx], {**model_defaults(name), "batch_size": 8}, None, i, epochs=2)
        n_forget = 12 + 5 * i  # 1 to 3 forget batches of 16: the models' epochs end at different steps
        datas.append(UnlearnData(x[idx[n_forget:]], y[idx[n_forget:]], x[idx[:n_forget]], y[idx[:n_forget]],
                                 stop_acc=0.1))
        models.append(m)
    return models, datas


def _together_and_alone(name, method, extra, k=4):
    models, datas = _shadows(name, k)
    recipe, params = resolve_params(name, method, {method: extra})
    seeds = [500 + 11 * i for i in range(k)]
    together = unlearn_many(method, models, datas, recipe, params, None, seeds, fresh=None)
    alone = [unlearn(method, m, d, recipe, params, None, s, None) for m, d, s in zip(models, datas, seeds)]
    return models, together, alone


# max_epochs bounds the models that never reach their stop: an ascent that runs on past it diverges (hqnn-l1
# GA's weights grew from 6 to 55 in 120 steps), and a divergent ascent amplifies rounding alike alone or together.
@pytest.mark.parametrize("name,method,extra", [
    ("hqnn-l1", "ga", {"stop_rule": "subsample", "stop_subsample": 8, "max_epochs": 10}),
    ("hqnn-l1", "graddiff", {"stop_rule": "batch", "lr": 0.2, "max_epochs": 10}),
    ("hqnn-l1", "rga", {"max_epochs": 10}),
    ("qnn-l5", "neggrad_plus", {"stop_rule": "full", "max_epochs": 5, "momentum": 0.5}),
    ("qnn-l5", "ga", {"repair_epochs": 1, "max_epochs": 3}),
])
def test_shadows_unlearned_together_equal_each_unlearned_alone(name, method, extra):
    originals, together, alone = _together_and_alone(name, method, extra)
    steps = [a.info["unlearn_steps"] for a in alone]
    assert any(s > 0 for s in steps)  # the ascent moved at least one model
    for orig, t, a in zip(originals, together, alone):
        diff = max((p - q).abs().max().item() for p, q in zip(t.parameters(), a.model.parameters()))
        assert diff < TOLERANCE
        moved = max((p - q).abs().max().item() for p, q in zip(a.model.parameters(), orig.parameters()))
        assert moved > 0 or a.info["unlearn_steps"] == 0
    assert not all(s == steps[0] for s in steps) or method == "neggrad_plus"  # models stop at their own steps


def test_unlearning_together_leaves_the_originals_untouched_and_falls_back_with_shots():
    models, datas = _shadows("qnn-l5", 2)
    before = [[p.clone() for p in m.parameters()] for m in models]
    recipe, params = resolve_params("qnn-l5", "ga", {"ga": {"max_epochs": 2}})
    out = unlearn_many("ga", models, datas, recipe, params, 64, [1, 2], fresh=None)  # shots: one by one
    alone = unlearn("ga", models[0], datas[0], recipe, params, 64, 1, None).model
    assert all(torch.equal(p, q) for p, q in zip(out[0].parameters(), alone.parameters()))
    assert all(torch.equal(p, q) for m, b in zip(models, before) for p, q in zip(m.parameters(), b))
    assert "run_many" in dir(METHODS["ga"]) and "run_many" not in dir(METHODS["ssd"])


def test_ulira_stage_unlearns_its_shadows_together_as_it_would_one_by_one(monkeypatch):
    from dataclasses import replace

    import workloads.unlearning as unlearning
    from workloads.stages import CellConfig, shadow_config, shadow_stage, ulira_stage

    cfg = CellConfig("hqnn-l1", "random:40", "ga", None, None, None, 0, dataset="digits", n_train=200, n_test=60) \
        .with_params({"hqnn-l1": {"epochs": 3}, "ulira": {"k": 4}, "ga": {"max_epochs": 10}})
    shadows = shadow_stage(shadow_config(cfg)).state
    calls = []
    original = unlearning.unlearns_together
    monkeypatch.setattr(unlearning, "unlearns_together", lambda *a: calls.append(original(*a)) or original(*a))
    together = ulira_stage(cfg, shadows).state["ulira.conf"]
    monkeypatch.setattr(unlearning, "unlearns_together", lambda *a: False)
    one_by_one = ulira_stage(replace(cfg), shadows).state["ulira.conf"]
    assert calls == [True]
    assert np.abs(together.numpy() - one_by_one.numpy()).max() < 1e-8
    untouched = ulira_stage(replace(cfg, method="none"), shadows).state["ulira.conf"]
    assert together.shape[0] == 4 and np.abs(together.numpy() - untouched.numpy()).max() > 1e-3


def test_the_cost_model_prices_shadows_ascending_together_as_a_group():
    from harness.estimate import group_share, stage_estimate
    from workloads.stages import CellConfig

    def seconds(**rga):
        cfg = CellConfig("hqnn-l1", "class:4", "rga", None, None, None, 0)
        return stage_estimate("ulira", cfg.with_params({"ulira": {"k": 8}, "rga": rga})).seconds

    # A gate refreshed during the ascent (refresh_every > 0) sends the shadows one by one; same work otherwise.
    assert seconds() / seconds(refresh_every=10**6) == pytest.approx(group_share("hqnn-l1", 8))
    assert group_share("hqnn-l1", 8) < 0.95
