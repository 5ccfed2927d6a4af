"""What every registry (methods, attacks, backends) shares: a member is a module with declared attributes."""

from __future__ import annotations

from types import ModuleType


def members(required: tuple[str, ...], *modules: ModuleType) -> dict[str, ModuleType]:
    """{module.NAME: module}, in the given order; a module lacking a required attribute is a bug in it,
    named at import rather than found halfway through a grid."""
    out: dict[str, ModuleType] = {}
    for m in modules:
        missing = [a for a in required if not hasattr(m, a)]
        if missing:
            raise TypeError(f"{m.__name__}: a registry member needs {', '.join(missing)}")
        if m.NAME in out:
            raise TypeError(f"{m.__name__}: name {m.NAME!r} is taken by {out[m.NAME].__name__}")
        out[m.NAME] = m
    return out
