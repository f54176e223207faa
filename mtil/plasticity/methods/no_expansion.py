"""No Expansion: the 3-layer MLP at its full (final) width from the start; `expand` does nothing."""
from ..models import mlp3, n_params, run_mlp3
from . import ExpandableMLP, register


@register("no_expansion")
class NoExpansion(ExpandableMLP):
    label = "No Expansion"

    def __init__(self, in_dim, num_classes, cfg, chunks):
        super().__init__()
        self.net = mlp3(in_dim, cfg.hidden, cfg.hidden, num_classes)

    def forward(self, x):
        return run_mlp3(self.net, x, self._note)

    def expand(self):
        pass

    def active_params(self):
        return n_params(self.net)
