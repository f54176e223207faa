"""`grow` (DynamicMoE): start each layer with g active experts, activate g more at every growth point.

Growth points are task boundaries (`grow.every: 0`) or every N training steps. Sizing follows DynamicMoE's
`MoELayer` (dojeon-ai/grow_rl_synthetic, `src/models/heads/dynamic_moe.py`), which fixes a parameter budget
and derives the expert width h_b from the FINAL expert count N:
  * N = g x stages (stages = growth points + 1; `grow.max_experts` caps it), the number of expert slots;
  * budget per layer = stages x (one expert of width `moe.hidden`), what g = 1 ends with;
  * h_b = the width at which N experts (weights and biases) fill the budget, rounded down as the reference does
    (`grow.width_rounding: nearest` rounds to the nearest width);
  * `grow.scale_top_k`: each input runs top_k x g experts, so the parameters one sample uses match across g too
    (the reference gates densely, which matches them trivially).
So g1 / g2 / g4 end within a few percent of each other in active expert parameters and in parameters per sample
on any number of tasks. New experts get a fresh default init (no function preservation, as in the paper;
`expert_init: zero_up` keeps the function instead); their columns in routers still being trained are zero, random
or the mean of the active columns (routers of finished tasks never select them). Their optimizer state is reset.
"""
from __future__ import annotations

import functools

import torch

from ..engine import optimizer as optim
from ..errors import MtilError
from .base import Policy, TrainContext, register


def stages(cfg) -> int:
    """Growth points + 1 over the whole run (every growth adds g experts)."""
    gc, tasks = cfg.policy.grow, len(cfg.data.order)
    if gc.every == 0:
        return tasks
    return 1 + tasks * cfg.train.iterations // gc.every


def final_experts(cfg) -> int:
    full = cfg.policy.grow.granularity * stages(cfg)
    cap = cfg.policy.grow.max_experts
    return full if cap is None else min(full, cap)


def expert_width(dim: int, *, hidden: int, budget_experts: int, experts: int, rounding: str) -> int:
    """Width h with experts x (h (2 dim + 1) + dim) closest to (below, for `floor`) budget_experts x one expert of
    width `hidden` (exact integer arithmetic)."""
    per_unit = 2 * dim + 1                                  # w_down column + b_down entry + w_up row
    budget = budget_experts * (hidden * per_unit + dim)
    num, den = budget - experts * dim, experts * per_unit
    width = num // den if rounding == "floor" else (2 * num + den) // (2 * den)
    if width < 1:
        raise MtilError(f"policy.grow: {experts} experts of a {dim}-wide tower cannot fit the parameters of "
                        f"{budget_experts} experts of width moe.hidden={hidden}; raise moe.hidden or lower granularity")
    return width


@register("grow")
class Grow(Policy):
    @staticmethod
    def moe_overrides(cfg) -> dict:
        gc = cfg.policy.grow
        g = gc.granularity  # its range, width_rounding's choices and the max_experts cap are config rules
        experts = final_experts(cfg)
        out = {"num_experts": experts}
        if gc.scale_hidden:
            out["hidden"] = functools.partial(expert_width, hidden=cfg.moe.hidden, budget_experts=stages(cfg),
                                              experts=experts, rounding=gc.width_rounding)
        if gc.scale_top_k:
            out["top_k"] = min(cfg.moe.top_k * g, experts)
        return out

    def setup(self) -> None:
        g = self.cfg.policy.grow.granularity
        for layer in self.model.layers:
            if g > layer.num_experts:
                raise MtilError(f"policy.grow.granularity={g} exceeds the {layer.num_experts} expert slots")
            layer.active[:] = False
            layer.active[:g] = True

    def begin_task(self, ctx: TrainContext) -> None:
        if self.cfg.policy.grow.every == 0 and ctx.task > 0 and ctx.step == 0:
            self.grow(ctx)

    def after_step(self, ctx: TrainContext) -> None:
        every = self.cfg.policy.grow.every
        if every > 0 and ctx.global_step % every == 0:
            self.grow(ctx)

    @torch.no_grad()
    def grow(self, ctx: TrainContext) -> None:
        gc = self.cfg.policy.grow
        for layer in self.model.layers:
            n = int(layer.active.sum())
            new = list(range(n, min(n + gc.granularity, layer.num_experts)))
            if not new:
                continue
            open_routers = layer.router_experts.all(dim=1)   # closed routers (finished tasks) never select new experts
            for e in new:
                layer.reset_expert(e, "fresh" if gc.expert_init == "default" else None)
                for tensor in layer.router_tensors():
                    tensor.data[open_routers, :, e] = self.router_column(tensor.data, layer.active, gc.router_init)[open_routers]
                if ctx.optimizer is not None:
                    optim.reset_state(ctx.optimizer, layer, e, router_column=True)
            layer.active[new] = True
            self.log(ctx, "grow", layer, new, active=int(layer.active.sum()))

    @staticmethod
    def router_column(weights: torch.Tensor, active: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "zero":
            return torch.zeros_like(weights[:, :, 0])
        if mode == "mean":
            return weights[:, :, active].mean(dim=2)
        if mode == "random":
            return torch.randn_like(weights[:, :, 0]) * weights.shape[1] ** -0.5
        raise MtilError(f"policy.grow.router_init must be zero, random or mean, got {mode!r}")
