"""Every hyper-parameter of training, unlearning and the attacks, with its default, in one place.

Grids override them per model name, per method name, or for `attack`/`lira` (DESIGN.md 10).
"""

from __future__ import annotations

from typing import Any

from .registry import METHODS, MODELS, model_spec

# Training recipes (DESIGN.md 4).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "qnn": {"epochs": 200, "lr": 0.05, "momentum": 0.9, "nesterov": True, "batch_size": 32},
    "hqnn": {"epochs": 25, "lr": 0.1, "momentum": 0.9, "nesterov": False, "batch_size": 8},
}

# Unlearning (DESIGN.md 6). Measured on hqnn-l1, MNIST, class:4, seed 0 (see the closing notes):
# - GA and RGA ascend until forget-set train accuracy reaches `stop_acc` (checked before every
#   step), bounded by `max_epochs`: the paper's lr 0.01 for 6 epochs moves nothing and unbounded
#   ascent collapses the model (FINDINGS.md). "auto" is 0.1 for class forgetting and the original
#   model's test accuracy for random forgetting (the level retrain would reach).
# - RGA runs plain SGD: with momentum 0.9 the ascent overshoots the stop and retained-class test
#   accuracy fell 10 points; without it 3 points, at about 8x the steps.
# - SSD leaves the circuit's rotation angles alone: an angle has no neutral zero (U3(beta * theta)
#   is another gate, not a weaker one); dampening 2 of the 24 angles cut retained accuracy to 0.13.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "retrain": {},
    "finetune": {"epochs": 3, "lr": 0.01, "momentum": 0.9, "batch_size": 16},
    "ga": {"lr": 0.05, "momentum": 0.9, "batch_size": 16, "max_epochs": 60, "stop_acc": "auto", "repair_epochs": 0},
    "ssd": {"alpha": 10.0, "lam": 1.0, "batch_size": 16, "dampen_quantum": False},
    "rga": {"lr": 0.05, "momentum": 0.0, "batch_size": 16, "max_epochs": 300, "stop_acc": "auto", "gamma": 1.0},
}

# The paper's gray-box MIA (DESIGN.md 7) and offline LiRA (off unless shadows > 0).
EXTRA_DEFAULTS: dict[str, dict[str, Any]] = {
    "attack": {"hidden": 64, "dropout": 0.3, "lr": 0.01, "epochs": 1000, "n_members": 500, "n_nonmembers": 500,
               "threshold": 0.5},
    "lira": {"shadows": 0},
}

_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def model_defaults(model: str) -> dict[str, Any]:
    return dict(FAMILY_DEFAULTS[model_spec(model).family])


def section_defaults(section: str, model: str | None = None) -> dict[str, Any]:
    if section in MODELS:
        return model_defaults(section)
    if section in METHOD_DEFAULTS:
        return dict(METHOD_DEFAULTS[section])
    if section in EXTRA_DEFAULTS:
        return dict(EXTRA_DEFAULTS[section])
    raise ValueError(
        f"unknown params section {section!r}; expected a model ({', '.join(MODELS)}), "
        f"a method ({', '.join(METHODS)}), 'attack' or 'lira'"
    )


def merged(section: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults of `section` with `overrides` applied; unknown keys and wrong types raise ValueError."""
    out = section_defaults(section)
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"params.{section}: unknown key {key!r}; valid keys: {', '.join(sorted(out)) or 'none'}")
        default = out[key]
        if key == "stop_acc":
            ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1)
            if not ok:
                raise ValueError(f"params.{section}.{key}: expected 'auto' or a number in [0, 1], got {value!r}")
        elif isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, _TYPES[type(default)]):
            raise ValueError(f"params.{section}.{key}: expected {type(default).__name__}, got {value!r}")
        out[key] = value
    return out


def validate_overrides(overrides: dict[str, dict[str, Any]] | None) -> None:
    for section, values in (overrides or {}).items():
        if not isinstance(values, dict):
            raise ValueError(f"params.{section}: expected a mapping of keys to values, got {values!r}")
        merged(section, values)


def resolve_params(model: str, method: str, overrides: dict[str, dict[str, Any]] | None = None):
    """(model recipe, method hyper-parameters) after overrides; validates every section given."""
    overrides = overrides or {}
    validate_overrides(overrides)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return merged(model, overrides.get(model)), merged(method, overrides.get(method))
