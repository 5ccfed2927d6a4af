"""The field's methods (RL, NegGrad+, SCRUB, SalUn, l1-sparse, Fisher forgetting, CF-k, EU-k) with their
registry defaults, on a small hqnn-l1 digits cell, class:4: each forgets the class and keeps the rest."""

import pytest
import torch

from tests.conftest import method_rows
from workloads import hparams
from workloads.data import load_split
from workloads.models import build_model, model_inputs
from workloads.stages import CellConfig, train_stage
from workloads.unlearning import METHODS
from workloads.unlearning.layers import last_k, layers

FIELD = ("random_label", "neggrad_plus", "scrub", "salun", "l1_sparse", "fisher", "cf_k", "eu_k")


@pytest.fixture(scope="module")
def rows():
    torch.set_num_threads(1)
    base = CellConfig("hqnn-l1", "class:4", "none", None, None, None, 0, dataset="digits", n_train=300, n_test=150)
    base = base.with_params({"hqnn-l1": {"epochs": 8}, "attack": {"epochs": 50}, "relearn": {"max_steps": 5}})
    return {m: row for m, (row, _) in method_rows(base, ("none", "retrain", *FIELD), train_stage(base)).items()}


def test_every_field_method_is_registered_with_its_cost_model():
    for name in FIELD:
        assert name in METHODS and METHODS[name].NAME == name
        assert set(hparams.METHOD_DEFAULTS[name]) == set(METHODS[name].PARAMS)


@pytest.mark.parametrize("method", [m for m in FIELD if m != "fisher"])
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
