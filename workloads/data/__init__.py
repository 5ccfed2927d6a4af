"""Data: the datasets and their disjoint roles (train, test, P_attack, P_eval), and forget sets."""

from .datasets import DATASETS, MIN_POPULATION_HALF, ROLES, VIEWS, Split, load_split, role_indices

__all__ = ["DATASETS", "MIN_POPULATION_HALF", "ROLES", "VIEWS", "Split", "load_split", "role_indices"]
