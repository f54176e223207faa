"""Progressive Neural Network, as the reference's `ProgressiveNet` (no task index: only the newest column's output).

Column k (0-based) is a 3-layer MLP `embed: in -> h`, `stem1: h -> h`, `stem2: h -> classes`. For k >= 1 each of
its last two layers also gets an adapter from the same-depth activations of columns 0..k-1 (concatenated, scaled
elementwise by a learned vector initialised U(-scaler_init, scaler_init)): `Linear(h*k, h) -> ReLU ->
Linear(h, out)`, added before the layer's ReLU. Each chunk start freezes the newest column and adds the next;
frozen columns stop computing their output layer.

Active parameters are counted as the reference counts them: every column's parameters, minus, for a frozen
column k >= 1, its output layer, output adapter and output scaler (the reference's column 0 keeps its unused
output layer in the count).
"""
import torch
from torch import nn

from ..models import n_params
from . import ExpandableMLP, register


class Column(nn.Module):
    def __init__(self, in_dim: int, width: int, num_classes: int, earlier: int, scaler_init: float):
        super().__init__()
        self.earlier, self.active = earlier, True
        self.embed = nn.Linear(in_dim, width)
        self.stems = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, num_classes)])
        if earlier:
            self.adapters = nn.ModuleList([
                nn.Sequential(nn.Linear(width * earlier, width), nn.ReLU(), nn.Linear(width, out))
                for out in (width, num_classes)])
            self.scalers = nn.ParameterList([
                nn.Parameter(torch.empty(width * earlier).uniform_(-scaler_init, scaler_init)) for _ in range(2)])

    def _layer(self, i, x, prev):
        y = self.stems[i](x)
        return y + self.adapters[i](self.scalers[i] * prev[i]) if self.earlier else y

    def forward(self, x, prev):
        """Output (None when frozen) and the per-depth activations of columns 0..k concatenated."""
        h1 = torch.relu(self.embed(x))
        h2 = torch.relu(self._layer(0, h1, prev))
        out = self._layer(1, h2, prev) if self.active else None
        feats = [h1, h2] if not self.earlier else [torch.cat([p, f], 1) for p, f in zip(prev, (h1, h2))]
        return out, feats

    def freeze(self):
        self.active = False
        self.requires_grad_(False)

    def counted_params(self):
        if self.active or not self.earlier:
            return n_params(self)
        return n_params(self) - n_params(self.stems[1]) - n_params(self.adapters[1]) - self.scalers[1].numel()


@register("pnn")
class ProgressiveNN(ExpandableMLP):
    label = "Progressive NN"

    def __init__(self, in_dim, num_classes, cfg, chunks):
        super().__init__()
        self.dims, self.scaler_init = (in_dim, cfg.hidden, num_classes), cfg.scaler_init
        self.columns = nn.ModuleList([Column(*self.dims, earlier=0, scaler_init=self.scaler_init)])

    def forward(self, x):
        prev = []
        for col in self.columns:
            out, prev = col(x, prev)
        for name, units in zip(("h1", "h2"), prev):  # every column's hidden units (the adapters read them all)
            self._note(name, units)
        return out

    def expand(self):
        self.columns[-1].freeze()
        device = self.columns[0].embed.weight.device
        self.columns.append(Column(*self.dims, earlier=len(self.columns), scaler_init=self.scaler_init).to(device))

    def active_params(self):
        return sum(c.counted_params() for c in self.columns)
