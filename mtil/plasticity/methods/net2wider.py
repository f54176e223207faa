"""Net2WiderNet with random initialisation: both hidden layers gain `grow` units at every chunk start.

Old weights are copied into the top-left block of each wider matrix; every new entry (new units' incoming and
outgoing weights, and new input columns of existing units) keeps the fresh `nn.Linear` initialisation, as in the
paper's variant (no function-preserving split). The layers are replaced, so the optimizer must be rebuilt.
"""
import torch
from torch import nn

from . import ExpandableMLP, register
from ..models import n_params


def _widen(layer: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    new = nn.Linear(in_features, out_features).to(layer.weight.device)
    with torch.no_grad():
        new.weight[: layer.out_features, : layer.in_features] = layer.weight
        new.bias[: layer.out_features] = layer.bias
    return new


@register("net2wider")
class Net2WiderNet(ExpandableMLP):
    label = "Net2WiderNet"

    def __init__(self, in_dim, num_classes, cfg):
        super().__init__()
        self.step = cfg.grow
        self.width = cfg.start
        self.l1 = nn.Linear(in_dim, self.width)
        self.l2 = nn.Linear(self.width, self.width)
        self.l3 = nn.Linear(self.width, num_classes)

    def forward(self, x):
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))

    def expand(self):
        w = self.width + self.step
        for name, (fan_in, fan_out) in {"l1": (self.l1.in_features, w), "l2": (w, w),
                                        "l3": (w, self.l3.out_features)}.items():
            old = getattr(self, name)
            new = _widen(old, fan_in, fan_out)
            self.replaced(old.weight, new.weight)
            self.replaced(old.bias, new.bias)
            setattr(self, name, new)
        self.width = w

    def active_params(self):
        return n_params(self)
