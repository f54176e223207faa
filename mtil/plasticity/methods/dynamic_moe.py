"""DynamicMoE: the MLP's first two layers become a mixture of bottleneck experts `Linear(d→h)→ReLU→Linear(h→d)`
(d = the CNN feature width), mixed by a router on the same features, then ReLU and the output layer `d→classes`.
With a single expert this is exactly a 3-layer MLP d→h→d→classes.

Granularity g starts with g experts of width hidden / g and adds g more at every chunk start (old experts keep
training). Gating (config `methods.dynamic_moe.gating`):
  * dense — softmax over all experts; every expert is active, so active parameters grow with the experts and the
    three granularities end with the same active size as the other methods (the default, used for matching);
  * topk — softmax over the `top_k * g` highest router logits; only those experts run for an input.
Expert weights are stacked as [E, d, h] / [E, h, d] tensors (grown by concatenation, so the optimizer must be
rebuilt after `expand`), and dispatch is one einsum (dense) or one gather + einsum (topk), never a loop over
experts.
"""
import math

import torch
from torch import nn

from . import ExpandableMLP, register
from ...errors import MtilError


# decorators apply bottom-up: g1 is registered first
@register("dynamic_moe_g4", config_key="dynamic_moe", label="DynamicMoE (g4)", granularity=4)
@register("dynamic_moe_g2", config_key="dynamic_moe", label="DynamicMoE (g2)", granularity=2)
@register("dynamic_moe_g1", config_key="dynamic_moe", label="DynamicMoE (g1)", granularity=1)
class DynamicMoE(ExpandableMLP):
    label = "DynamicMoE"

    def __init__(self, in_dim, num_classes, cfg, granularity: int):
        super().__init__()
        if cfg.hidden % granularity:
            raise MtilError(f"methods.dynamic_moe.hidden={cfg.hidden} is not divisible by granularity {granularity}")
        if cfg.gating not in ("dense", "topk"):
            raise MtilError(f"methods.dynamic_moe.gating must be dense or topk, got '{cfg.gating}'")
        if cfg.router_init not in ("zero", "random"):
            raise MtilError(f"methods.dynamic_moe.router_init must be zero or random, got '{cfg.router_init}'")
        self.g, self.d, self.h = granularity, in_dim, cfg.hidden // granularity
        self.gating, self.k, self.router_init = cfg.gating, cfg.top_k * granularity, cfg.router_init
        self.head = nn.Linear(in_dim, num_classes)
        for name, value in self._new_experts(granularity).items():
            setattr(self, name, nn.Parameter(value))

    @property
    def num_experts(self) -> int:
        return self.w_in.shape[0]

    def _new_experts(self, n: int) -> dict:
        d, h = self.d, self.h

        def uniform(*shape, fan_in):  # nn.Linear's default initialisation range
            bound = 1.0 / math.sqrt(fan_in)
            return torch.empty(*shape, device=self.head.weight.device).uniform_(-bound, bound)

        new = {"w_in": uniform(n, d, h, fan_in=d), "b_in": uniform(n, h, fan_in=d),
               "w_out": uniform(n, h, d, fan_in=h), "b_out": uniform(n, d, fan_in=h)}
        if self.router_init == "zero":
            new.update(router_w=torch.zeros_like(new["b_out"]), router_b=torch.zeros_like(new["b_out"][:, 0]))
        else:
            new.update(router_w=uniform(n, d, fan_in=d), router_b=uniform(n, fan_in=d))
        return new

    def expand(self):
        for name, value in self._new_experts(self.g).items():
            old = getattr(self, name)
            new = nn.Parameter(torch.cat([old.detach(), value]))  # old experts are the leading block
            self.replaced(old, new)
            setattr(self, name, new)

    def router_logits(self, x):
        return x @ self.router_w.t() + self.router_b

    def mix(self, x):
        """The experts' gated sum [B, d] (before the ReLU and output layer)."""
        w_in, b_in, w_out, b_out = self.w_in, self.b_in, self.w_out, self.b_out  # [E,d,h] [E,h] [E,h,d] [E,d]
        logits = self.router_logits(x)                                           # [B, E]
        if self.gating == "dense" or self.k >= logits.shape[1]:
            gates = torch.softmax(logits, dim=1)
            hid = torch.relu(torch.einsum("bd,edh->beh", x, w_in) + b_in)
            return torch.einsum("beh,ehd->bd", hid * gates.unsqueeze(-1), w_out) + gates @ b_out
        top, idx = logits.topk(self.k, dim=1)                                    # [B, k]
        gates = torch.softmax(top, dim=1)
        hid = torch.relu(torch.einsum("bd,bkdh->bkh", x, w_in[idx]) + b_in[idx])
        return torch.einsum("bkh,bkhd->bd", hid * gates.unsqueeze(-1), w_out[idx]) + \
            torch.einsum("bk,bkd->bd", gates, b_out[idx])

    def forward(self, x):
        return self.head(torch.relu(self.mix(x)))

    def active_params(self):
        e = self.num_experts
        per_expert = 2 * self.d * self.h + self.h + self.d
        running = e if self.gating == "dense" else min(self.k, e)
        return running * per_expert + e * (self.d + 1) + sum(p.numel() for p in self.head.parameters())
