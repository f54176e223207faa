"""DynamicMoE: the MLP's first two layers become a mixture of bottleneck experts `Linear(d→h)→ReLU→Linear(h→d)`
(d = the CNN feature width), mixed by a router on the same features, then ReLU and the output layer `d→classes`.
With a single expert this is exactly a 3-layer MLP d→h→d→classes.

Granularity g starts with g experts of width hidden / g and adds g more at every chunk start (old experts keep
training). Gating (config `methods.dynamic_moe.gating`):
  * dense — softmax over all experts; every expert is active, so active parameters grow with the experts and the
    three granularities end with the same active size as the other methods (the default, used for matching);
  * topk — softmax over all experts, of which only the `top_k * g` most probable run for an input, weighted by
    their (not renormalised) probabilities, as in the Switch Transformer; an optional load-balancing loss
    (`balance_weight`) keeps new experts in use. Active parameters stay constant while experts are added.
Expert weights are stacked as [E, d, h] / [E, h, d] tensors (grown by concatenation, so the optimizer must be
rebuilt after `expand`). Dispatch is vectorized, never a loop over experts: dense gating is two einsums over all
experts; topk sorts the (input, expert) pairs by expert into a padded [E, C, d] buffer and uses two batched
matmuls, so each input only runs through its selected experts.
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
        self.balance_weight, self._aux = cfg.balance_weight, None
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
        probs = torch.softmax(self.router_logits(x), dim=1)                      # [B, E]
        self._aux = None
        if self.gating == "dense" or self.k >= probs.shape[1]:
            hid = torch.relu(torch.einsum("bd,edh->beh", x, w_in) + b_in)
            return torch.einsum("beh,ehd->bd", hid * probs.unsqueeze(-1), w_out) + probs @ b_out
        gates, idx = probs.topk(self.k, dim=1)  # [B, k]; not renormalised, so the router learns even at k = 1
        if self.training and self.balance_weight > 0:  # Switch-Transformer load balancing: E * sum_e f_e * P_e
            share = torch.zeros_like(probs[0]).index_add_(0, idx.flatten(), torch.ones_like(gates.flatten()))
            self._aux = self.balance_weight * probs.shape[1] * (share / idx.numel() * probs.mean(0)).sum()
        return self._dispatch(x, idx, gates)

    def _dispatch(self, x, idx, gates):
        """Run each input only through its selected experts: sort the (input, expert) pairs by expert, scatter
        the inputs into a zero-padded [E, C, d] buffer (C = the largest expert load of the batch), two batched
        matmuls, then gather the C-slots back and add them, gate-weighted, into their inputs' rows."""
        b, k = idx.shape
        expert = idx.flatten()                                                   # [b * k]
        order = torch.argsort(expert, stable=True)
        expert = expert[order]
        token = torch.arange(b, device=x.device).repeat_interleave(k)[order]
        counts = torch.bincount(expert, minlength=self.num_experts)
        slot = torch.arange(b * k, device=x.device) - (torch.cumsum(counts, 0) - counts)[expert]
        buf = x.new_zeros(self.num_experts, int(counts.max()), self.d)
        buf[expert, slot] = x[token]
        hid = torch.relu(torch.bmm(buf, self.w_in) + self.b_in.unsqueeze(1))     # [E, C, h]
        out = torch.bmm(hid, self.w_out) + self.b_out.unsqueeze(1)               # [E, C, d]
        weighted = out[expert, slot] * gates.flatten()[order].unsqueeze(1)
        return torch.zeros_like(x).index_add_(0, token, weighted)

    def extra_loss(self):
        return self._aux

    def forward(self, x):
        return self.head(torch.relu(self.mix(x)))

    def active_params(self):
        e = self.num_experts
        per_expert = 2 * self.d * self.h + self.h + self.d
        running = e if self.gating == "dense" else min(self.k, e)
        return running * per_expert + e * (self.d + 1) + sum(p.numel() for p in self.head.parameters())
