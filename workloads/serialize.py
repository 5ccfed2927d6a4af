"""Model and attack weights as safetensors bytes; nothing is ever unpickled."""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load, save


def dumps(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    return save({k: v.detach().contiguous() for k, v in state.items()}, metadata=metadata or {})


def loads(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata); the metadata sits in the JSON header after its 8-byte length."""
    (n,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8 : 8 + n]).get("__metadata__", {})
    return load(blob), meta
