"""A hyper-parameter as the registries declare it: its default and the values it may take.

Each method, attack and model family declares its own (`PARAMS`) beside the measured reason for each
default; `hparams` merges a grid's overrides into them and rejects a value outside its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


@dataclass(frozen=True)
class Param:
    """`default` fixes the type (an int key takes ints, a float key ints or floats); a number must lie in
    [low, high] (`open_low`/`open_high` exclude the bound); `choices` lists the only values allowed;
    `also` lists extra values beside the range (e.g. "auto"); `kind` is the type of the range when the
    default is one of `also`."""

    default: Any
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] = ()
    also: tuple[Any, ...] = ()
    kind: type | None = None

    def check(self, where: str, value: Any) -> Any:
        """`value` if allowed; otherwise ValueError naming `where` (params.SECTION.KEY) and what it takes."""
        if any(type(value) is type(a) and value == a for a in self.also):
            return value
        if self.choices:
            if any(type(value) is type(c) and value == c for c in self.choices):
                return value
            raise ValueError(f"{where}: expected one of {', '.join(map(_show, self.choices))}, got {value!r}")
        kind = self.kind or type(self.default)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, _TYPES[kind]):
            extra = "".join(f" or {_show(a)}" for a in self.also)
            raise ValueError(f"{where}: expected {kind.__name__}{extra}, got {value!r}")
        if kind in (int, float) and not self._inside(value):
            raise ValueError(f"{where}: expected {self.describe_range()}, got {value!r}")
        return value

    def _inside(self, v: float) -> bool:
        above = v > self.low if self.open_low else v >= self.low
        below = v < self.high if self.open_high else v <= self.high
        return above and below

    def describe_range(self) -> str:
        kind = "an integer" if (self.kind or type(self.default)) is int else "a number"
        lo = "(" if self.open_low or self.low == -math.inf else "["
        hi = ")" if self.open_high or self.high == math.inf else "]"
        extra = "".join(f" or {_show(a)}" for a in self.also)
        return f"{kind} in {lo}{_num(self.low)}, {_num(self.high)}{hi}{extra}"


def _num(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"


def _show(v: Any) -> str:
    return "false" if v is False else "true" if v is True else str(v)


def defaults(params: dict[str, Param]) -> dict[str, Any]:
    return {k: p.default for k, p in params.items()}


# Shapes shared by many declarations.
def positive_int(default: int, high: float = math.inf) -> Param:
    return Param(default, low=1, high=high)


def rate(default: float, high: float = 10.0) -> Param:
    """A learning rate: positive; above 10 every recipe here diverges."""
    return Param(default, low=0.0, high=high, open_low=True)


def fraction(default: float) -> Param:
    return Param(default, low=0.0, high=1.0)
