import numpy as np
import pytest
import torch

from workloads.data import load_split
from workloads.forget_set import forget_split, parse_forget


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
