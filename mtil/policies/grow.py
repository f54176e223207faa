"""`grow` (DynamicMoE): start each layer with g active experts, activate g more at every growth point.

Growth points are task boundaries (`grow.every: 0`) or every N training steps; a step-based growth due on a task's
last step is skipped and logged (`grow-skipped`), as merge skips such a merge. Sizing follows DynamicMoE's
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
import logging

import torch

from ..errors import MtilError
from .base import Policy, RunFacts, TrainContext, register

log = logging.getLogger(__name__)
ROUTER_INITS = ("zero", "random", "mean")


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
    def __init__(self, run: RunFacts, *, granularity: int, every: int, max_experts: int | None = None,
                 scale_hidden: bool = True, width_rounding: str = "floor", scale_top_k: bool = True,
                 router_init: str = "zero", expert_init: str = "default"):
        super().__init__(run)
        if router_init not in ROUTER_INITS:
            raise MtilError(f"policy.grow.router_init must be one of {', '.join(ROUTER_INITS)}, got {router_init!r}")
        self.granularity, self.every, self.max_experts = granularity, every, max_experts
        self.scale_hidden, self.width_rounding, self.scale_top_k = scale_hidden, width_rounding, scale_top_k
        self.router_init, self.expert_init = router_init, expert_init

    @classmethod
    def from_config(cls, run: RunFacts, section) -> "Grow":
        return cls(run, **dict(section.grow))

    def stages(self) -> int:
        """Growth points + 1 over the whole run (every growth adds g experts). A step-based growth due on a task's
        last step is skipped (`after_step`), so it is not a growth point."""
        if self.every == 0:
            return self.run.tasks
        total, iterations = self.run.tasks * self.run.iterations, self.run.iterations
        return 1 + sum(1 for s in range(self.every, total + 1, self.every) if s % iterations != 0)

    def final_experts(self) -> int:
        full = self.granularity * self.stages()
        return full if self.max_experts is None else min(full, self.max_experts)

    def adapter_overrides(self) -> dict:
        experts = self.final_experts()   # g's range, width_rounding's choices and the cap are config rules
        out = {"num_experts": experts}
        if self.scale_hidden:
            out["hidden"] = functools.partial(expert_width, hidden=self.run.hidden, budget_experts=self.stages(),
                                              experts=experts, rounding=self.width_rounding)
        if self.scale_top_k:
            out["top_k"] = min(self.run.top_k * self.granularity, experts)
        return out

    def attach(self, model, tracker, fresh: bool = True) -> "Grow":
        super().attach(model, tracker, fresh)
        if fresh:   # g experts active at start; a resumed run's masks come from its checkpoint
            for layer in model.layers:
                if self.granularity > layer.num_experts:
                    raise MtilError(f"policy.grow.granularity={self.granularity} exceeds the {layer.num_experts} "
                                    "expert slots")
                layer.active[:] = False
                layer.active[:self.granularity] = True
        return self

    def begin_task(self, ctx: TrainContext) -> None:
        if self.every == 0 and ctx.task > 0 and ctx.step == 0:
            self.grow(ctx)

    def after_step(self, ctx: TrainContext) -> None:
        if self.every == 0 or ctx.global_step % self.every != 0:
            return
        if ctx.step >= self.run.iterations:   # as merge's: new experts would be evaluated without a training step
            log.info("task %s: the growth due on its last step (%d) is skipped", ctx.task_name, ctx.step)
            self.log(ctx, "grow-skipped", None, [], reason="last step of the task: the new experts would be "
                                                           "evaluated without a training step")
            return
        self.grow(ctx)

    @torch.no_grad()
    def grow(self, ctx: TrainContext) -> None:
        for layer in self.model.layers:
            n = int(layer.active.sum())
            new = list(range(n, min(n + self.granularity, layer.num_experts)))
            if not new:
                continue
            open_routers = layer.router_experts.all(dim=1)   # closed routers (finished tasks) never select new experts
            for e in new:
                layer.reset_expert(e, "fresh" if self.expert_init == "default" else None)
                for tensor in layer.router_tensors():
                    tensor.data[open_routers, :, e] = self.router_column(tensor.data, layer.active, self.router_init)[open_routers]
                ctx.slot_changed(layer, e, router_column=True)
            layer.active[new] = True
            self.log(ctx, "grow", layer, new, active=int(layer.active.sum()))

    @staticmethod
    def router_column(weights: torch.Tensor, active: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "zero":
            return torch.zeros_like(weights[:, :, 0])
        if mode == "mean":
            return weights[:, :, active].mean(dim=2)
        return torch.randn_like(weights[:, :, 0]) * weights.shape[1] ** -0.5   # random
