"""Forget-set specs (`class:K`, `random:N`) and the retain/forget index split they induce."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SPEC = re.compile(r"^(class|random):(\d+)$")


@dataclass(frozen=True)
class ForgetSpec:
    kind: str  # "class" | "random"
    value: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def forget_class(self) -> int | None:
        return self.value if self.kind == "class" else None


def parse_forget(spec: str, n_train: int | None = None, n_classes: int = 10) -> ForgetSpec:
    """Parse and validate a forget spec; raises ValueError that says what a valid spec looks like."""
    m = _SPEC.match(str(spec).strip())
    if not m:
        raise ValueError(f"bad forget spec {spec!r}: expected 'class:K' (0 <= K < {n_classes}) or 'random:N'")
    kind, value = m.group(1), int(m.group(2))
    if kind == "class" and not 0 <= value < n_classes:
        raise ValueError(f"bad forget spec {spec!r}: class must be in 0..{n_classes - 1}")
    if kind == "random" and value < 1:
        raise ValueError(f"bad forget spec {spec!r}: N must be at least 1")
    if kind == "random" and n_train is not None and value >= n_train:
        raise ValueError(f"bad forget spec {spec!r}: N must be below n_train={n_train}")
    return ForgetSpec(kind, value)


def forget_split(spec: ForgetSpec | str, y_train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (retain, forget) training indices; random forgetting draws with `seed`."""
    if isinstance(spec, str):
        spec = parse_forget(spec, n_train=len(y_train))
    idx = np.arange(len(y_train))
    if spec.kind == "class":
        forget = idx[y_train == spec.value]
        if len(forget) == 0:
            raise ValueError(f"forget spec {spec}: no training sample has label {spec.value}")
    else:
        if spec.value >= len(y_train):
            raise ValueError(f"bad forget spec {spec}: N must be below n_train={len(y_train)}")
        rng = np.random.default_rng([seed, 0xF0])
        forget = np.sort(rng.choice(len(y_train), size=spec.value, replace=False))
    retain = np.setdiff1d(idx, forget)
    return retain, forget
