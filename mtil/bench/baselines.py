"""The baseline adapter the MoE step is compared with: a plain bottleneck per block (no router, no gather)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..model import backbone


class PlainAdapter(nn.Module):
    """One dense bottleneck adapter (no router, no gather): the cheapest adapter a block can carry."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1, scale: float = 0.1):
        super().__init__()
        self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout, self.scale = nn.Dropout(dropout), scale

    def forward(self, h):
        return self.up(self.dropout(F.relu(self.down(h)))) * self.scale


def attach_plain(clip: nn.Module, hidden: int) -> nn.ModuleList:
    """A `PlainAdapter` beside the MLP of every block of both towers, reading the residual stream (the default
    placement of `moe.attach`)."""
    adapters = nn.ModuleList()
    for transformer in backbone.towers(clip).values():
        for block in transformer.resblocks:
            adapter = PlainAdapter(block.ln_2.normalized_shape[0], hidden).to(next(clip.parameters()).device)
            kept: dict = {}  # the residual stream entering ln_2, as `moe.attach` reads it by default
            block.ln_2.register_forward_pre_hook(lambda m, inputs, kept=kept: kept.__setitem__("x", inputs[0]))
            block.mlp.register_forward_hook(lambda m, inputs, output, a=adapter, kept=kept: output + a(kept.pop("x")))
            adapters.append(adapter)
    return adapters
