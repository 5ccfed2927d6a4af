"""Many models trained in lockstep (`train_many`) equal each model trained alone by `fit`."""

import pytest
import torch

from workloads.data import load_split
from workloads.hparams import model_defaults
from workloads.models import build_model, model_inputs
from workloads.models.batched import train_many
from workloads.models.training import SGD
from workloads.models.training import as_labels, fit

TOLERANCE = 1e-10


def _datasets(x, y, sizes, seed=0):
    """Different random subsets of (x, y), one per size."""
    out = []
    for k, n in enumerate(sizes):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + k))[:n]
        out.append((x[idx], y[idx]))
    return out


def _together_and_alone(name, datasets, recipe, epochs, side, shots=None):
    seeds = [101 + 7 * k for k in range(len(datasets))]
    together = [build_model(name, 50 + k, side) for k in range(len(datasets))]
    alone = [build_model(name, 50 + k, side) for k in range(len(datasets))]
    costs = train_many(together, datasets, recipe, seeds, shots=shots, epochs=epochs)
    costs_alone = [fit(m, x, y, recipe, shots, s, epochs) for m, (x, y), s in zip(alone, datasets, seeds)]
    return together, alone, costs, costs_alone


def _max_diff(together, alone):
    return max((p - q).abs().max().item()
               for a, b in zip(together, alone) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", ["hqnn-l1", "qnn-l5", "qnn-angle-l2"])
def test_four_models_together_equal_each_trained_alone(name):
    split = load_split("digits", 48, 30, 0)
    x, _ = model_inputs(name, split)
    # Unequal sizes: 6, 5, 3 and 2 steps an epoch, so models finish at different steps, and last
    # batches of 8, 4, 4 and 4 rows, padded to 8 in a step where another model's batch is full.
    datasets = _datasets(x, as_labels(split.y_train), [48, 36, 20, 12])
    recipe = {**model_defaults(name), "batch_size": 8}
    together, alone, costs, costs_alone = _together_and_alone(name, datasets, recipe, 2, 8)
    assert _max_diff(together, alone) < TOLERANCE
    fresh = build_model(name, 50, 8)
    assert any((p - q).abs().max() > 1e-3 for p, q in zip(together[0].parameters(), fresh.parameters()))
    assert [(c.circuits, c.device_circuits) for c in costs] == [(c.circuits, c.device_circuits) for c in costs_alone]


def test_models_with_the_same_data_differ_by_seed():
    split = load_split("digits", 64, 30, 0)
    x, _ = model_inputs("qnn-l5", split)
    data = (x, as_labels(split.y_train))
    models = [build_model("qnn-l5", 0, 8) for _ in range(2)]
    train_many(models, [data, data], {**model_defaults("qnn-l5"), "batch_size": 8}, [1, 2], epochs=1)
    assert not torch.equal(models[0].quantum.weight, models[1].quantum.weight)


def test_finite_shots_train_each_model_alone():
    split = load_split("digits", 16, 30, 0)
    x, _ = model_inputs("qnn-angle-l2", split)
    datasets = _datasets(x, as_labels(split.y_train), [16, 12])
    recipe = {**model_defaults("qnn-angle-l2"), "batch_size": 8}
    together, alone, costs, costs_alone = _together_and_alone("qnn-angle-l2", datasets, recipe, 1, 8, shots=16)
    assert _max_diff(together, alone) == 0.0
    assert costs[0].shots == costs_alone[0].shots > 0


def test_many_sgd_matches_torch_sgd_and_leaves_idle_models_alone():
    torch.manual_seed(0)
    w = torch.randn(3, 5, dtype=torch.float64)
    stacked = {"w": w.clone().requires_grad_()}
    opt = SGD(stacked, lr=0.1, momentum=0.9, nesterov=True, maximize=True)
    singles = [w[k].clone().requires_grad_() for k in range(3)]
    opts = [torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, maximize=True) for p in singles]
    for step in range(4):
        grads = torch.randn(3, 5, dtype=torch.float64)
        active = torch.tensor([True, True, step < 2])
        stacked["w"].grad = grads.clone()
        opt.step(active)
        for k in range(3):
            if active[k]:
                singles[k].grad = grads[k].clone()
                opts[k].step()
    for k in range(3):
        assert torch.equal(stacked["w"][k], singles[k])


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("name", ["hqnn-l1", "qnn-l10"])
def test_k_models_on_mnist_equal_each_trained_alone(name, k):
    """The acceptance check: K models, two epochs of 1000 MNIST samples (subsets for K > 1)."""
    split = load_split("mnist", 1000, 100, 0)
    x, _ = model_inputs(name, split)
    y = as_labels(split.y_train)
    datasets = [(x, y)] if k == 1 else _datasets(x, y, [1000 - 13 * i for i in range(k)])
    together, alone, _, _ = _together_and_alone(name, datasets, model_defaults(name), 2, 28)
    assert _max_diff(together, alone) < TOLERANCE


def test_more_models_than_one_stack_train_in_stacks_and_still_equal_each_alone(monkeypatch):
    import workloads.models.batched as batched

    monkeypatch.setitem(batched.STACK_LIMIT, "hqnn", 3)  # 4 models: a stack of 3, then one of 1
    split = load_split("digits", 48, 30, 0)
    x, _ = model_inputs("hqnn-l1", split)
    datasets = _datasets(x, as_labels(split.y_train), [48, 36, 20, 12])
    recipe = {**model_defaults("hqnn-l1"), "batch_size": 8}
    together, alone, costs, _ = _together_and_alone("hqnn-l1", datasets, recipe, 1, 8)
    assert _max_diff(together, alone) < TOLERANCE
    assert costs[0].seconds != costs[3].seconds  # each stack's wall shared among its own models
