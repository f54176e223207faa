"""Progressive Neural Network: each chunk start freezes every column and adds a new 3-layer MLP column.

Column k's second layer also receives (linear lateral connection) the first-layer activations of columns 1..k-1,
and its output layer the second-layer activations of columns 1..k-1. Only the latest column's output is used
(there is no task index), so earlier columns' output layers (and their laterals into them) are kept but inactive.
"""
import torch
from torch import nn

from . import ExpandableMLP, register
from ..models import n_params


class Column(nn.Module):
    def __init__(self, in_dim: int, width: int, num_classes: int, earlier: int):
        super().__init__()
        self.l1 = nn.Linear(in_dim, width)
        self.l2 = nn.Linear(width, width)
        self.head = nn.Linear(width, num_classes)
        # laterals from all earlier columns at once: one matrix over their concatenated activations
        self.lat2 = nn.Linear(earlier * width, width, bias=False) if earlier else None
        self.lat_head = nn.Linear(earlier * width, num_classes, bias=False) if earlier else None

    def hidden(self, x, prev1):
        h1 = torch.relu(self.l1(x))
        z2 = self.l2(h1)
        if self.lat2 is not None:
            z2 = z2 + self.lat2(torch.cat(prev1, dim=1))
        return h1, torch.relu(z2)

    def out(self, h2, prev2):
        y = self.head(h2)
        return y if self.lat_head is None else y + self.lat_head(torch.cat(prev2, dim=1))


@register("pnn")
class ProgressiveNN(ExpandableMLP):
    label = "Progressive NN"

    def __init__(self, in_dim, num_classes, cfg):
        super().__init__()
        self.dims = (in_dim, cfg.hidden, num_classes)
        self.columns = nn.ModuleList([Column(*self.dims, earlier=0)])

    def forward(self, x):
        acts1, acts2 = [], []
        for col in self.columns:
            h1, h2 = col.hidden(x, acts1)
            acts1.append(h1)
            acts2.append(h2)
        return self.columns[-1].out(acts2[-1], acts2[:-1])

    def expand(self):
        for p in self.columns.parameters():
            p.requires_grad_(False)
        device = self.columns[0].l1.weight.device
        self.columns.append(Column(*self.dims, earlier=len(self.columns)).to(device))

    def active_params(self):
        *earlier, last = self.columns
        inactive = sum(n_params(c.head) + (n_params(c.lat_head) if c.lat_head is not None else 0) for c in earlier)
        return n_params(self) - inactive
