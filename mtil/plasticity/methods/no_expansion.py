"""No Expansion: the 3-layer MLP at its full (final) width from the start; `expand` does nothing. `reset`, the
control beside the methods, is the same network with `reinit` set: the runner rebuilds the whole model (CNN
included) from a fresh seed at every chunk start, so at every chunk it is a fresh copy under the same budget."""
from ..models import mlp3, n_params, run_mlp3
from . import ExpandableMLP, register


@register("reset", config_key="no_expansion", label="Reset (fresh every chunk)", reinit=True)
@register("no_expansion")
class NoExpansion(ExpandableMLP):
    label = "No Expansion"

    def __init__(self, in_dim, num_classes, cfg, chunks, reinit: bool = False):
        super().__init__()
        self.reinit = reinit
        self.net = mlp3(in_dim, cfg.hidden, cfg.hidden, num_classes)

    def forward(self, x):
        return run_mlp3(self.net, x, self._note)

    def expand(self):
        pass

    def active_params(self):
        return n_params(self.net)
