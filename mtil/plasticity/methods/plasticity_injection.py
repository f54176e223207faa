"""Plasticity Injection at every chunk start: freeze everything so far (θ), add a fresh MLP θ1 and a frozen copy
θ2 of it, and output h_θ(x) + (h_θ1(x) − h_θ2(x)). Because θ2 equals θ1 at injection, the difference is exactly
zero there and the function is preserved; afterwards only θ1 trains. Repeated injections nest: θ is the whole
frozen sum so far. All 1 + 2 (c - 1) MLPs take part in every forward pass, so all count as active (the
reference's `PlasticityInjection` counts the same: P * (2 (c - 1) + 1)).
"""
import copy

from torch import nn

from ..models import mlp3, n_params, run_mlp3
from . import ExpandableMLP, register


@register("plasticity_injection")
class PlasticityInjection(ExpandableMLP):
    label = "Plasticity Injection"

    def __init__(self, in_dim, num_classes, cfg, chunks):
        super().__init__()
        self.dims = (in_dim, cfg.hidden, cfg.hidden, num_classes)
        self.base = mlp3(*self.dims)
        self.injected = nn.ModuleList()  # θ1 of each injection (only the latest trains)
        self.copies = nn.ModuleList()    # θ2: frozen copies of θ1 at injection time

    def forward(self, x):
        y = run_mlp3(self.base, x, self._note)
        for new, frozen in zip(self.injected, self.copies):  # bracketed: the difference is exactly 0 at injection
            y = y + (run_mlp3(new, x, self._note) - run_mlp3(frozen, x, self._note))
        return y

    def expand(self):
        for p in self.parameters():
            p.requires_grad_(False)
        new = mlp3(*self.dims).to(next(self.base.parameters()).device)
        frozen = copy.deepcopy(new).requires_grad_(False)
        self.injected.append(new)
        self.copies.append(frozen)

    def active_params(self):
        return n_params(self)
