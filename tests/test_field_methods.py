"""The field's methods (RL, NegGrad+, SCRUB, SalUn, l1-sparse, Fisher forgetting, CF-k, EU-k) with their
registry defaults, on hqnn-l1 as they were tuned (MNIST, 1000 training samples, class:4; seed 0, not a tuning
seed): each forgets the class and keeps the rest."""

import pytest
import torch

from workloads import hparams
from workloads.data import load_split
from workloads.models import build_model, model_inputs
from workloads.stages import CellConfig, train_stage
from workloads.unlearning import METHODS
from workloads.unlearning.layers import last_k, layers

FIELD = ("random_label", "neggrad_plus", "scrub", "salun", "l1_sparse", "fisher", "cf_k", "eu_k")
# cf_k and fisher cannot forget a class on hqnn-l1 at any tuned setting (docs/methods.md, benchmarks/tune.py):
# their own tests below check what they do instead
FORGETS = ("random_label", "neggrad_plus", "scrub", "salun", "l1_sparse", "eu_k")


@pytest.fixture(scope="module")
def rows():
    """hqnn-l1 at the tuned setting (MNIST, 1000 training samples, its recipe), seed 0, class:4: forget-set and
    retained-class test accuracy of the original and of each method (exact outputs)."""
    from workloads.models.training import accuracy
    from workloads.stages import _unlearn_data, cell_data
    from workloads.unlearning import unlearn

    torch.set_num_threads(2)
    cfg = CellConfig("hqnn-l1", "class:4", "none", None, None, None, 0)
    state, data = train_stage(cfg).state, cell_data(cfg)
    udata = _unlearn_data(cfg, data, 0.1)

    def model():
        m = build_model("hqnn-l1", 0)
        m.load_state_dict(state)
        return m

    def row(m):
        keep = udata.test_retain
        return {"acc_train_forget": accuracy(m, udata.x_forget, udata.y_forget),
                "acc_test_retain": accuracy(m, udata.x_test[keep], udata.y_test[keep])}

    out = {"none": {**row(model()), "unlearn_circuits_device": 0}}
    recipe = hparams.model_defaults("hqnn-l1")
    for method in FORGETS:
        res = unlearn(method, model(), udata, recipe, hparams.merged(method, None), None, 1, lambda: build_model("hqnn-l1", 0))
        out[method] = {**row(res.model), "unlearn_circuits_device": res.cost.device_circuits}
    return out


def test_every_field_method_is_registered_with_its_cost_model():
    for name in FIELD:
        assert name in METHODS and METHODS[name].NAME == name
        assert set(hparams.METHOD_DEFAULTS[name]) == set(METHODS[name].PARAMS)


@pytest.mark.slow  # about 2.5 min on 2 quiet cores: one hqnn-l1 training at the full recipe, six methods
@pytest.mark.parametrize("method", FORGETS)
def test_field_method_forgets_the_class_and_keeps_the_rest(rows, method):
    none, row = rows["none"], rows[method]
    assert none["acc_train_forget"] >= 0.8  # the original learned the class it should forget
    assert none["acc_train_forget"] - row["acc_train_forget"] >= 0.3, row["acc_train_forget"]
    assert none["acc_test_retain"] - row["acc_test_retain"] <= 0.15, row["acc_test_retain"]
    assert 0 < row["unlearn_circuits_device"]


def test_layers_run_input_to_output_and_last_k_counts_from_the_head():
    hqnn, qnn = build_model("hqnn-l1", 0, image_side=8), build_model("qnn-l10", 0)
    assert len(layers(hqnn)) == 4 and len(layers(qnn)) == 11  # conv, linear, 1 circuit layer, head; 10 + head
    names = [n for n, _ in qnn.named_parameters()]
    w = dict(zip(names, last_k(qnn, 2)))
    assert bool(w["head.weight"].all()) and bool(w["quantum.weight"][-1].all())
    assert not w["quantum.weight"][:-1].any()


def test_cf_k_and_eu_k_leave_the_frozen_layers_untouched():
    from workloads.unlearning import UnlearnData, unlearn

    split = load_split("digits", 80, 20, 0)
    x, _ = model_inputs("qnn-l5", split)
    y = torch.as_tensor(split.y_train, dtype=torch.long)
    data = UnlearnData(x[:60], y[:60], x[60:], y[60:], 0.1)
    original = build_model("qnn-l5", 0)
    for method in ("cf_k", "eu_k"):
        out = unlearn(method, original, data, {}, hparams.merged(method, {"k": 2, "epochs": 2}), None, 0,
                      fresh=lambda: build_model("qnn-l5", 1))
        q0, q1 = original.quantum.weight, out.model.quantum.weight
        assert torch.equal(q0[:-1], q1[:-1]) and not torch.equal(q0[-1], q1[-1])
        assert not torch.equal(original.head.weight, out.model.head.weight)


def test_fisher_noise_has_variance_alpha_over_the_retain_fisher():
    """Normalised by sqrt(alpha * min(1 / F, max_inverse)), the added noise is standard normal: parameters
    the retain set does not use move most."""
    from workloads.unlearning import UnlearnData, unlearn
    from workloads.unlearning.importance import fisher_diagonal

    split = load_split("digits", 80, 20, 0)
    x, _ = model_inputs("qnn-l5", split)
    y = torch.as_tensor(split.y_train, dtype=torch.long)
    data = UnlearnData(x[:60], y[:60], x[60:], y[60:], 0.1)
    original = build_model("qnn-l5", 0)
    params = hparams.merged("fisher", {"alpha": 1e-6})
    fisher = fisher_diagonal(original, data.x_retain, data.y_retain, params["batch_size"], 0)  # before: no side effects
    out = unlearn("fisher", original, data, {}, params, None, 0, fresh=None)
    z = torch.cat([((q - p).detach() / (params["alpha"] * (1 / f.clamp_min(1e-30)).clamp(max=params["max_inverse"])).sqrt()).flatten()
                   for p, q, f in zip(original.parameters(), out.model.parameters(), fisher)])
    assert abs(float(z.mean())) < 0.2 and 0.85 < float(z.std()) < 1.15  # 250 parameters
    assert out.cost.device_circuits > 0  # the retain set's gradients are paid for


def test_defaults_are_what_the_recorded_tune_runs_chose():
    """A default changed without a new tune run (benchmarks/tune.py) fails here, for each family tuned."""
    import json
    from pathlib import Path

    from workloads.models import model_spec

    runs = sorted((Path(__file__).parents[1] / "benchmarks" / "tuning").glob("*.json"))
    assert {json.loads(p.read_text())["model"] for p in runs} >= {"hqnn-l1", "qnn-l10"}
    for path in runs:
        run = json.loads(path.read_text())
        assert min(run["seeds"]) >= 100 and run["val_fraction"] > 0
        assert set(run["methods"]) >= {"finetune", "ga", "ssd", "rga", "graddiff", *FIELD}
        family = model_spec(run["model"]).family
        for method, entry in run["methods"].items():
            defaults = hparams.merged(method, None, family)
            assert {k: defaults[k] for k in entry["chosen"]} == entry["chosen"], (path.name, method)


def test_family_defaults_are_declared_keys_within_their_ranges():
    for name, mod in METHODS.items():
        for family, values in getattr(mod, "FAMILY_DEFAULTS", {}).items():
            assert family in hparams.FAMILY_PARAMS, (name, family)
            for key, value in values.items():
                assert mod.PARAMS[key].check(f"{name}.{key}", value) == value
