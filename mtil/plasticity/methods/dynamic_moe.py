"""DynamicMoE, as the reference's `DynamicMoE` head: every Linear layer of the 3-layer MLP (`in -> h -> h ->
classes`, ReLU between) is an `MoELayer`; each chunk start activates g more experts in every layer.

`MoELayer(h_in, h_out)` holds `max_experts = chunks * g` experts (granularity g starts with g) and one router
`Linear(h_in, 1)` with bias per expert. An expert is `bottleneck_relu`: `Linear(h_in, h_b) -> ReLU -> Linear(h_b,
h_out)` with `h_b = int(h_in * (h_out - N) / (h_in + h_out) / N)`, N = max_experts (or min(output_max_k,
max_experts) with `match_active`), so a fully grown layer has about the parameters of the Linear it replaces; or
`linear`: `Linear(h_in, h_out)`. Forward over the E active experts:
  logits [B, E] from the routers; if E > output_max_k, all but the top output_max_k logits are set to -1e8;
  if E > grad_max_k, only the grad_max_k experts with the largest (masked) logits pass gradient to their
  outputs (the others' outputs are detached); out = sum_e softmax(logits)_e * expert_e(x);
  load-balancing term E * sum_e f_e * P_e, f_e = share of inputs whose top-1 is e, P_e = mean probability.
null output_max_k / grad_max_k mean no limit (the reference's 1e10). The experts run batched (their weights
concatenated into one matmul per layer and step); experts not yet active get no gradient, as in the reference.
"""
import torch
from torch import nn

from ...errors import MtilError
from . import ExpandableMLP, register

NEG_INF = -1e8  # the reference's masking value


def bottleneck_width(h_in: int, h_out: int, n: int) -> int:
    return int(h_in * (h_out - n) / (h_in + h_out) / n)


class Expert(nn.Module):
    def __init__(self, kind: str, h_in: int, h_b: int, h_out: int):
        super().__init__()
        self.fc1 = nn.Linear(h_in, h_b if kind == "bottleneck_relu" else h_out)
        self.fc2 = nn.Linear(h_b, h_out) if kind == "bottleneck_relu" else None


class MoELayer(nn.Module):
    def __init__(self, h_in: int, h_out: int, initial: int, max_experts: int, grow_by: int, cfg):
        super().__init__()
        self.curr, self.max_experts, self.grow_by = initial, max_experts, grow_by
        inf = float("inf")
        self.output_max_k = inf if cfg.output_max_k is None else cfg.output_max_k
        self.grad_max_k = inf if cfg.grad_max_k is None else cfg.grad_max_k
        if cfg.expert not in ("bottleneck_relu", "linear"):
            raise MtilError(f"methods.dynamic_moe.expert must be bottleneck_relu or linear, got '{cfg.expert}'")
        h_b = 0
        if cfg.expert == "bottleneck_relu":
            n = min(self.output_max_k, max_experts) if cfg.match_active else max_experts
            h_b = bottleneck_width(h_in, h_out, n)
            if h_b < 1:
                raise MtilError(f"a {h_in}->{h_out} layer with {n} bottleneck experts gets expert width {h_b}; "
                                f"use more classes / wider methods.dynamic_moe.hidden, or fewer chunks")
        self.experts = nn.ModuleList([Expert(cfg.expert, h_in, h_b, h_out) for _ in range(max_experts)])
        self.routers = nn.ModuleList([nn.Linear(h_in, 1) for _ in range(max_experts)])
        self.expert_pcount = sum(p.numel() for p in self.experts[0].parameters())
        self.router_pcount = sum(p.numel() for p in self.routers[0].parameters())

    def _first(self, x, es):
        """[B, E, width of fc1]: every active expert's first Linear, as one matmul."""
        w = torch.cat([e.fc1.weight for e in es])                     # [E * o, i]
        return (x @ w.t() + torch.cat([e.fc1.bias for e in es])).view(len(x), len(es), -1)

    def _second(self, hid, es):
        """sum_e hid[:, e] @ fc2_e.weight^T as one matmul; hid [B, E, h_b] -> [B, h_out] (no bias)."""
        w = torch.cat([e.fc2.weight.t() for e in es])                 # [E * h_b, o]
        return hid.reshape(len(hid), -1) @ w

    def forward(self, x, note=None):
        """(output [B, h_out], load-balancing term); `note(units)` gets the experts' bottleneck ReLU units."""
        e = self.curr
        es, rs = self.experts[:e], self.routers[:e]
        logits = x @ torch.cat([r.weight for r in rs]).t() + torch.cat([r.bias for r in rs])  # [B, E]
        if e > self.output_max_k:
            vals, idx = logits.topk(int(self.output_max_k), dim=1)
            logits = torch.full_like(logits, NEG_INF).scatter(1, idx, vals)
        probs = torch.softmax(logits, dim=1)
        bottleneck = es[0].fc2 is not None
        y = self._first(x, es)
        if bottleneck and note is not None:
            note(torch.relu(y).reshape(len(x), -1))
        if e > self.grad_max_k:  # per-expert outputs, all but the top grad_max_k detached
            if bottleneck:
                y = torch.stack([torch.relu(y[:, i]) @ m.fc2.weight.t() + m.fc2.bias for i, m in enumerate(es)], 1)
            idx = logits.topk(int(self.grad_max_k), dim=1).indices
            mask = torch.zeros_like(logits).scatter(1, idx, 1.0).unsqueeze(-1)
            y = mask * y + ((1 - mask) * y).detach()
            out = torch.einsum("be,beo->bo", probs, y)
        elif bottleneck:  # sum_e p_e (W2_e relu(h_e) + b2_e) without forming every expert's output
            out = self._second(torch.relu(y) * probs.unsqueeze(-1), es) + probs @ torch.stack([m.fc2.bias for m in es])
        else:
            out = torch.einsum("be,beo->bo", probs, y)
        top1 = torch.zeros_like(logits).scatter(1, logits.topk(1, dim=1).indices, 1.0)
        balance = e * (top1.mean(0) * probs.mean(0)).sum()
        return out, balance

    def grow(self):
        self.curr = min(self.curr + self.grow_by, self.max_experts)

    def count_active_params(self):
        """The reference's count: experts that can contribute to the output, plus every active router."""
        return self.expert_pcount * min(self.curr, self.output_max_k) + self.router_pcount * self.curr


# decorators apply bottom-up: g1 is registered first
@register("dynamic_moe_g4", config_key="dynamic_moe", label="DynamicMoE (g4)", granularity=4)
@register("dynamic_moe_g2", config_key="dynamic_moe", label="DynamicMoE (g2)", granularity=2)
@register("dynamic_moe_g1", config_key="dynamic_moe", label="DynamicMoE (g1)", granularity=1)
class DynamicMoE(ExpandableMLP):
    label = "DynamicMoE"

    def __init__(self, in_dim, num_classes, cfg, chunks, granularity: int):
        super().__init__()
        g, dims = granularity, (in_dim, cfg.hidden, cfg.hidden, num_classes)
        self.layers = nn.ModuleList([MoELayer(a, b, g, chunks * g, g, cfg) for a, b in zip(dims[:-1], dims[1:])])
        self.balance_weight, self._aux = cfg.balance_weight, None

    def forward(self, x):
        terms = []
        for i, layer in enumerate(self.layers):
            note = None if self._trace is None else lambda units, i=i: self._note(f"experts{i + 1}", units)
            x, balance = layer(x, note)
            terms.append(balance)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
                self._note(f"h{i + 1}", x)
        use = self.balance_weight > 0 and self.training
        self._aux = self.balance_weight * torch.stack(terms).sum() if use else None
        return x

    def expand(self):
        for layer in self.layers:
            layer.grow()

    def extra_loss(self):
        return self._aux

    def active_params(self):
        return sum(layer.count_active_params() for layer in self.layers)

    def expert_widths(self) -> list[int]:
        """Bottleneck units per expert in MoE layer 1, 2, 3 (`h_b`); empty for `linear` experts."""
        return [layer.experts[0].fc1.out_features for layer in self.layers if layer.experts[0].fc2 is not None]
