"""Grid params: each section's declared hyper-parameters (defaults and ranges), with a grid's overrides.

Sections are a model name (its family's training recipe), a method name (declared in its module under
`workloads/unlearning/`), an attack section (`attack`, `references`, and any attack's own, declared under
`workloads/attacks/`) or `relearn` (docs/grid.md). Only the training recipes live here: no single
member owns them.
"""

from __future__ import annotations

from typing import Any

from .attacks import SECTIONS as ATTACK_SECTIONS
from .models import MODELS, model_spec
from .params import Param, defaults, positive_int, rate
from .unlearning import METHODS
from .unlearning import relearn

# Training recipes (docs/methods.md): the study's, per model family.
FAMILY_PARAMS: dict[str, dict[str, Param]] = {
    "qnn": {"epochs": positive_int(200, 100_000), "lr": rate(0.05), "momentum": Param(0.9, 0.0, 1.0, open_high=True),
            "nesterov": Param(True), "batch_size": positive_int(32, 4096)},
    "hqnn": {"epochs": positive_int(25, 100_000), "lr": rate(0.1), "momentum": Param(0.9, 0.0, 1.0, open_high=True),
             "nesterov": Param(False), "batch_size": positive_int(8, 4096)},
}
FAMILY_DEFAULTS = {f: defaults(p) for f, p in FAMILY_PARAMS.items()}
EXTRA_PARAMS: dict[str, dict[str, Param]] = {**ATTACK_SECTIONS, "relearn": relearn.PARAMS}
METHOD_DEFAULTS = {m: defaults(mod.PARAMS) for m, mod in METHODS.items()}
EXTRA_DEFAULTS = {s: defaults(p) for s, p in EXTRA_PARAMS.items()}


def family_defaults(method: str, family: str | None) -> dict[str, Any]:
    """The defaults a method module declares for one model family (`FAMILY_DEFAULTS`, each tuned by
    benchmarks/tune.py on that family), over its module defaults."""
    return {**METHOD_DEFAULTS[method], **getattr(METHODS[method], "FAMILY_DEFAULTS", {}).get(family, {})}


def model_defaults(model: str) -> dict[str, Any]:
    return dict(FAMILY_DEFAULTS[model_spec(model).family])


def section_params(section: str) -> dict[str, Param]:
    if section in MODELS:
        return FAMILY_PARAMS[model_spec(section).family]
    if section in METHODS:
        return METHODS[section].PARAMS
    if section in EXTRA_PARAMS:
        return EXTRA_PARAMS[section]
    raise ValueError(
        f"unknown params section {section!r}; expected a model ({', '.join(MODELS)}), "
        f"a method ({', '.join(METHODS)}), or one of {', '.join(map(repr, EXTRA_PARAMS))}"
    )


def merged(section: str, overrides: dict[str, Any] | None, family: str | None = None) -> dict[str, Any]:
    """Defaults of `section` (a method's for model `family`, where it declares them) with `overrides` applied;
    an unknown key, a wrong type or a value out of its range raises ValueError naming params.SECTION.KEY."""
    declared = section_params(section)
    out = family_defaults(section, family) if section in METHODS else defaults(declared)
    for key, value in (overrides or {}).items():
        if key not in declared:
            raise ValueError(f"params.{section}: unknown key {key!r}; valid keys: {', '.join(sorted(out)) or 'none'}")
        out[key] = declared[key].check(f"params.{section}.{key}", value)
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
    return merged(model, overrides.get(model)), merged(method, overrides.get(method), model_spec(model).family)


def attack_params(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every attack section with overrides applied; `references.k` and `ulira.k` must be even (pairs)."""
    overrides = overrides or {}
    out = {s: merged(s, overrides.get(s)) for s in ATTACK_SECTIONS}
    for section, what in (("references", "reference models come in complementary pairs over P_attack"),
                          ("ulira", "shadow models come in complementary pairs over the shadow pool")):
        if out[section]["k"] % 2:
            raise ValueError(f"params.{section}.k: expected 0 or an even number ({what}), got {out[section]['k']}")
    refs = out["references"]
    if refs["mode"] == "online" and refs["k"] < 4:  # a variance needs two IN and two OUT references per sample
        raise ValueError(f"params.references.k: mode online needs at least 4 references, got {refs['k']}")
    return out
