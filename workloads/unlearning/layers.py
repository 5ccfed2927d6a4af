"""What "layer" means for CF-k and EU-k on these models.

The layers, input to output, are the classical front end's modules (HQNN: the convolution, then the
Linear(980, 256)), then each variational layer of the circuit (the (L, 8, 3) angle tensor split along L;
a circuit model's flat angle vector is one layer), then the classical head. "The last k layers" counts
from the head: k = 1 is the head alone, k = 2 adds the circuit's last variational layer.
"""

from __future__ import annotations

import torch
from torch import nn

# One layer: (parameter index in model.parameters(), slice along its first axis or None for all of it).
Layer = list[tuple[int, "int | None"]]


def layers(model: nn.Module) -> list[Layer]:
    out: list[Layer] = []
    module_of: dict[str, int] = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        owner = name.rsplit(".", 1)[0]
        if name == "quantum.weight" and p.dim() == 3:  # (L, qubits, 3): one layer per L
            out += [[(i, j)] for j in range(p.shape[0])]
        elif owner in module_of:
            out[module_of[owner]].append((i, None))
        else:
            module_of[owner] = len(out)
            out.append([(i, None)])
    return out


def last_k(model: nn.Module, k: int) -> list[torch.Tensor]:
    """Gradient weights: 1 on the parameters of the last `k` layers, 0 elsewhere."""
    params = list(model.parameters())
    weights = [torch.zeros_like(p) for p in params]
    for layer in layers(model)[-k:]:
        for i, j in layer:
            if j is None:
                weights[i].fill_(1.0)
            else:
                weights[i][j] = 1.0
    return weights
