"""The adapters' optimizer and learning-rate schedule, and the reset of one slot's optimizer state.

`SlotAdamW` is torch's AdamW with one step count per expert slot (per expert for expert tensors, per expert
column for routers). `reset_state` (merge target, grown expert) zeroes one slot's moments and its step count, so
the slot's following updates are those of a freshly created AdamW whatever the tensor's age; other slots are
untouched. (With torch's AdamW and a shared step count, the reset slot's bias correction treats it as old: its
first updates come out 2-4x too large.)
"""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler

from ..model.moe import AdaptedCLIP, MoEAdapter


class SlotAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, as torch.optim.AdamW) whose step count, hence bias correction, is kept per
    slot along one dimension of each tensor (`slot_dims[i]` for the i-th parameter; None = one count)."""

    def __init__(self, params, slot_dims, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        params = list(params)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.slot_dims = {p: d for p, d in zip(params, slot_dims)}

    def _steps_shape(self, p: torch.Tensor) -> list[int]:
        shape = [1] * p.dim()
        d = self.slot_dims.get(p)
        if d is not None:
            shape[d] = p.shape[d]
        return shape

    def slot_steps(self, p: torch.Tensor) -> torch.Tensor:
        """The step counts of p's slots (created at zero; widened from an older optimizer's single count)."""
        state = self.state[p]
        shape = self._steps_shape(p)
        step = state.get("step")
        if step is None:
            step = torch.zeros(shape, dtype=torch.float32, device=p.device)
        elif list(step.shape) != shape:
            step = step.to(torch.float32).expand(shape).clone()
        state["step"] = step.to(p.device)
        return state["step"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step = self.slot_steps(p)
                step += 1
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias1 = (1 - torch.pow(beta1, step.double())).to(p.dtype)
                bias2_sqrt = (1 - torch.pow(beta2, step.double())).sqrt().to(p.dtype)
                denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
                p.sub_(exp_avg / denom * (lr / bias1))
        return loss

    @torch.no_grad()
    def reset_slot(self, p: torch.Tensor, index) -> None:
        """Forget slot `index` of p: zero moments and step count (the next update is a fresh AdamW's first)."""
        state = self.state.get(p)
        if not state:
            return
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][index] = 0
        self.slot_steps(p)[index] = 0


def build_optimizer(model: AdaptedCLIP, lr: float, weight_decay: float) -> SlotAdamW:
    """SlotAdamW over the adapters: one step count per expert (expert tensors) and per expert column (routers)."""
    params, dims = [], []
    for layer in model.layers:
        for p, d in [(t, 0) for t in layer.expert_tensors()] + [(t, 2) for t in layer.router_tensors()]:
            if p.requires_grad:
                params.append(p)
                dims.append(d)
    return SlotAdamW(params, dims, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, iterations: int, warmup: int, min_lr: float) -> CosineLRScheduler:
    """timm's cosine schedule with linear warm-up, stepped per optimizer update (`step_update`)."""
    return CosineLRScheduler(optimizer, t_initial=max(iterations, 1), lr_min=min_lr, warmup_t=min(warmup, max(iterations - 1, 0)),
                             warmup_lr_init=0.0, warmup_prefix=False, t_in_epochs=False)


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer, layer: MoEAdapter, expert: int, router_column: bool = False) -> None:
    """Forget the optimizer state of one expert's slices (and optionally its router columns): zero moments and,
    with `SlotAdamW`, the slot's step count, so its next updates are a freshly created AdamW's."""
    targets = [(p, (expert,)) for p in layer.expert_tensors()]
    if router_column:
        targets += [(p, (slice(None), slice(None), expert)) for p in layer.router_tensors()]
    for p, index in targets:
        if isinstance(optimizer, SlotAdamW):
            optimizer.reset_slot(p, index)
            continue
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.shape == p.shape:
                value[index] = 0
