"""Seeds of a cell's random streams."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def derive_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed for one random stream of a cell, fixed by the cell's seed and a label."""
    h = hashlib.sha256(json.dumps([seed, *labels], default=str).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1
