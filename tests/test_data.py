import numpy as np
import pytest
import torch

from workloads.data import load_split
from workloads.data.forget_set import forget_split, parse_forget


def test_mnist_split_is_seeded_and_well_formed():
    a, b, c = load_split("mnist", 1000, 500, 0), load_split("mnist", 1000, 500, 0), load_split("mnist", 1000, 500, 1)
    assert a.amp_train.shape == (1000, 256) and a.images_test.shape == (500, 1, 28, 28)
    assert np.array_equal(a.y_train, b.y_train) and not np.array_equal(a.y_train, c.y_train)
    assert torch.allclose(a.amp_train.norm(dim=1), torch.ones(1000, dtype=torch.float64))
    assert a.images_train.min() >= -1 and a.images_train.max() <= 1
    assert a.angle_train.min() >= 0 and a.angle_train.max() <= np.pi
    assert set(np.unique(a.y_train)) == set(range(10))


def test_digits_pads_amplitudes():
    s = load_split("digits", 200, 100, 0)
    assert s.amp_train.shape == (200, 256) and s.images_train.shape[-1] == 8
    assert torch.all(s.amp_train[:, 64:] == 0)


def test_split_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds the 1797 samples"):
        load_split("digits", 1500, 500, 0)
    # digits keeps room for both population halves only up to n_train + n_test = 1697
    with pytest.raises(ValueError, match="need at least 50 each.*n_train \\+ n_test <= 1697"):
        load_split("digits", 1200, 500, 0)
    assert len(load_split("digits", 1197, 500, 0).index["attack"]) == 50
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("cifar", 10, 10, 0)


def test_forget_sets():
    y = np.array([0, 4, 4, 1, 2, 4, 3, 3, 9, 8])
    retain, forget = forget_split("class:4", y, 0)
    assert forget.tolist() == [1, 2, 5] and len(retain) == 7
    big = np.arange(1000) % 10
    assert forget_split("random:50", big, 0)[1].tolist() != forget_split("random:50", big, 1)[1].tolist()
    r1, f1 = forget_split("random:3", y, 0)
    r2, f2 = forget_split("random:3", y, 0)
    assert f1.tolist() == f2.tolist() and len(f1) == 3 and not set(f1) & set(r1)


@pytest.mark.parametrize(
    "spec, match",
    [("class:10", "class must be in 0..9"), ("random:10", "N must be below n_train=10"), ("random:0", "at least 1"),
     ("digit:4", "expected 'class:K'"), ("class:-1", "expected 'class:K'"), ("", "expected")],
)
def test_bad_forget_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_forget(spec, n_train=10)


@pytest.mark.parametrize("dataset, n_train, n_test",
                         [("digits", 200, 100), pytest.param("mnist", 1000, 500, marks=pytest.mark.slow)])
def test_roles_are_disjoint_and_the_input_maps_see_only_p_attack(dataset, n_train, n_test):
    from sklearn.decomposition import PCA

    from workloads.data.datasets import _raw

    s = load_split(dataset, n_train, n_test, 0)
    x, y, _ = _raw(dataset)
    sizes = {r: len(i) for r, i in s.index.items()}
    assert sizes["train"] == n_train and sizes["test"] == n_test and abs(sizes["attack"] - sizes["eval"]) <= 1
    everything = np.concatenate(list(s.index.values()))
    assert len(np.unique(everything)) == len(everything) == len(y)  # disjoint, and together the whole dataset
    for role, idx in s.index.items():
        assert np.array_equal(s.labels[role], y[idx]), role
    assert np.array_equal(s.map_fit_index, s.index["attack"])
    # The amplitude view is exactly PCA fit on P_attack: train and test never shape the map.
    k = min(256, sizes["attack"], x.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(x[s.index["attack"]])
    for role in ("train", "eval"):
        ref = pca.transform(x[s.index[role]])
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        assert np.allclose(s.amp_train.numpy()[:, :k] if role == "train" else s.inputs("amp", role).numpy()[:, :k],
                           ref, atol=1e-8), role


def _tail_auc(train: np.ndarray, test: np.ndarray) -> float:
    """How well a tail statistic separates train from test inputs, either way round (0.5 = not at all)."""
    from sklearn.metrics import roc_auc_score

    a = roc_auc_score(np.r_[np.ones(len(train)), np.zeros(len(test))], np.r_[train, test])
    return max(a, 1 - a)


TAIL_CUTS = {"amp": [(8, 256), (32, 256), (64, 256), (128, 256)], "angle": [(2, 8), (4, 8), (6, 8)]}


def tail_energy_aucs(seed: int) -> dict[str, float]:
    """Train-vs-test AUC of the energy in tail components of every fitted input map (MNIST, one seed)."""
    s = load_split("mnist", 1000, 500, seed)
    out = {}
    for view, cuts in TAIL_CUTS.items():
        tr, te = s.inputs(view, "train").numpy(), s.inputs(view, "test").numpy()
        if view == "angle":  # energy away from the centre of the angle range
            tr, te = tr - np.pi / 2, te - np.pi / 2
        for lo, hi in cuts:
            out[f"{view}[{lo}:{hi}]"] = _tail_auc((tr[:, lo:hi] ** 2).sum(1), (te[:, lo:hi] ** 2).sum(1))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_tail_energy_of_the_input_maps_does_not_separate_train_from_test(seed):
    """A map fit on the training images left more tail energy in test inputs (AUC 0.55-0.62); fit on
    P_attack, train and test are exchangeable. The HQNN's input (the image) has no fitted map."""
    aucs = tail_energy_aucs(seed)
    print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()))
    assert max(aucs.values()) <= 0.55, aucs
