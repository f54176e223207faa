"""Net2WiderNet with random initialisation, as the reference's `ExpandingMLP`.

Every layer holds its final-size weight `[h_in, h_out]` from the start and uses its leading block: at chunk c of
C both hidden layers are `int(hidden * (1 / C) * c)` wide (the full `hidden` at chunk C); the input and output
widths are fixed. Growing exposes more of the block, whose entries kept their initial random values (no
function-preserving split, as in the paper's variant). The initialisation is the reference's: `kaiming_uniform_`
(a = sqrt 5) on the `[h_in, h_out]` tensor, so the bound is 1 / sqrt(h_out), the bias likewise.
"""
import math

import torch
from torch import nn
from torch.nn import init

from . import ExpandableMLP, register


class SlicedLinear(nn.Module):
    def __init__(self, h_in: int, h_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(h_in, h_out))
        self.bias = nn.Parameter(torch.empty(h_out))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(init._calculate_fan_in_and_fan_out(self.weight)[0])
        init.uniform_(self.bias, -bound, bound)

    def forward(self, x, h_in: int, h_out: int):
        return x @ self.weight[:h_in, :h_out] + self.bias[:h_out]


@register("net2wider")
class Net2WiderNet(ExpandableMLP):
    label = "Net2WiderNet"

    def __init__(self, in_dim, num_classes, cfg, chunks):
        super().__init__()
        self.hidden, self.chunks, self.dims = cfg.hidden, chunks, (in_dim, cfg.hidden, cfg.hidden, num_classes)
        self.layers = nn.ModuleList([SlicedLinear(a, b) for a, b in zip(self.dims[:-1], self.dims[1:])])

    def width(self) -> int:
        """Width of both hidden layers now (the reference's `int(h * expand_ratio * idx)`, full at the end)."""
        return self.hidden if self.chunk >= self.chunks else int(self.hidden * (1.0 / self.chunks) * self.chunk)

    def _sizes(self):
        w = self.width()
        return [(self.dims[0], w), (w, w), (w, self.dims[3])]

    def forward(self, x):
        for i, (layer, (h_in, h_out)) in enumerate(zip(self.layers, self._sizes())):
            x = layer(x, h_in, h_out)
            if i < 2:
                x = torch.relu(x)
                self._note(f"h{i + 1}", x)
        return x

    def expand(self):
        pass  # the wider block is used from now on (`width` follows self.chunk)

    def active_params(self):
        return sum(h_in * h_out + h_out for h_in, h_out in self._sizes())
