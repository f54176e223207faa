"""`grow` (DynamicMoE): start each layer with g active experts, activate g more at every growth point.

Growth points are task boundaries (`grow.every: 0`) or every N training steps, up to `grow.max_experts`.
With `grow.scale_hidden` the expert width is `moe.hidden / g`, the paper's parameter matching, so g1 / g2 / g4
end with about the same active parameters. New experts get a fresh default init (no function preservation,
as in the paper; `expert_init: zero_up` keeps the function instead) and new router columns are zero, random or
the mean of the active columns. Their optimizer state is reset, so the optimizer trains them from the next step.
"""
import torch

from .. import optim
from ..errors import MtilError
from .base import Policy, TrainContext, register


@register("grow")
class Grow(Policy):
    @staticmethod
    def moe_overrides(cfg) -> dict:
        g = cfg.policy.grow.granularity
        if g < 1:
            raise MtilError(f"policy.grow.granularity must be >= 1, got {g}")
        if not cfg.policy.grow.scale_hidden:
            return {}
        if cfg.moe.hidden % g:
            raise MtilError(f"moe.hidden={cfg.moe.hidden} is not divisible by policy.grow.granularity={g}")
        return {"hidden": cfg.moe.hidden // g}

    @property
    def max_experts(self) -> int:
        m = self.cfg.policy.grow.max_experts
        return self.cfg.moe.num_experts if m is None else min(m, self.cfg.moe.num_experts)

    def setup(self) -> None:
        g = self.cfg.policy.grow.granularity
        if g > self.max_experts:
            raise MtilError(f"policy.grow.granularity={g} exceeds the maximum of {self.max_experts} experts")
        for layer in self.model.layers:
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
            new = list(range(n, min(n + gc.granularity, self.max_experts)))
            if not new:
                continue
            for e in new:
                layer.reset_expert(e, "fresh" if gc.expert_init == "default" else None)
                for tensor in layer.router_tensors():
                    tensor.data[:, :, e] = self.router_column(tensor.data, layer.active, gc.router_init)
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
