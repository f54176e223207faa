"""Optimizer, learning-rate schedule, and the guard that keeps locked adapter slices bit-identical.

Experts live in stacked tensors, so a frozen expert is a slice, not a parameter that can leave the optimizer.
`SliceGuard` hooks the optimizer step: before it, the gradients of locked slices are zeroed and the slices
saved; after it, they are written back. "Locked" = frozen or inactive experts, and every router but the one
being trained. This holds whatever the optimizer does (AdamW momentum, weight decay, fp16 scaler), which is the
guarantee users rely on. `reset_state` clears the moments of one expert slice (merge target, new experts).
"""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler

from .moe import AdaptedCLIP, MoEAdapter


def build_optimizer(model: AdaptedCLIP, lr: float, weight_decay: float) -> torch.optim.AdamW:
    params = [p for p in model.adapter_parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, iterations: int, warmup: int, min_lr: float) -> CosineLRScheduler:
    """timm's cosine schedule with linear warm-up, stepped per optimizer update (`step_update`)."""
    return CosineLRScheduler(optimizer, t_initial=max(iterations, 1), lr_min=min_lr, warmup_t=min(warmup, max(iterations - 1, 0)),
                             warmup_lr_init=0.0, warmup_prefix=False, t_in_epochs=False)


class SliceGuard:
    """Optimizer step hooks that keep locked expert and router slices unchanged."""

    def __init__(self, model: AdaptedCLIP, optimizer: torch.optim.Optimizer, router: int):
        self.layers = model.layers
        self.router = router
        self._saved: list = []
        self._handles = [optimizer.register_step_pre_hook(self._before),
                         optimizer.register_step_post_hook(self._after)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def _locked(self, layer: MoEAdapter) -> tuple[torch.Tensor, torch.Tensor]:
        experts = layer.frozen | ~layer.active
        routers = torch.ones(layer.router.shape[0], dtype=torch.bool, device=experts.device)
        routers[self.router] = False
        return experts, routers

    @torch.no_grad()
    def _before(self, optimizer, args, kwargs) -> None:
        self._saved = []
        for layer in self.layers:
            experts, routers = self._locked(layer)
            for tensors, mask in ((layer.expert_tensors(), experts), (layer.router_tensors(), routers)):
                if not bool(mask.any()):
                    continue
                for p in tensors:
                    if p.grad is not None:
                        p.grad[mask] = 0
                    self._saved.append((p, mask, p.detach()[mask].clone()))

    @torch.no_grad()
    def _after(self, optimizer, args, kwargs) -> None:
        for p, mask, value in self._saved:
            p.data[mask] = value
        self._saved = []


@torch.no_grad()
def reset_state(optimizer: torch.optim.Optimizer, layer: MoEAdapter, expert: int, router_column: bool = False) -> None:
    """Zero the optimizer moments of one expert's slices (and optionally its router columns)."""
    targets = [(p, (expert,)) for p in layer.expert_tensors()]
    if router_column:
        targets += [(p, (slice(None), slice(None), expert)) for p in layer.router_tensors()]
    for p, index in targets:
        state = optimizer.state.get(p, {})
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape:
                value[index] = 0
