"""The frozen-expert guarantee: locked adapter slices stay bit-identical through every optimizer step.

Experts live in stacked tensors, so a frozen expert is a slice, not a parameter that can leave the optimizer.
`SliceGuard` hooks the optimizer step: before it, the gradients of locked slices are zeroed and the slices
saved; after it, they are written back. "Locked" = frozen or inactive experts, and every router but the one
being trained. This holds whatever the optimizer does (AdamW momentum, weight decay, fp16 scaler), which is the
guarantee users rely on.
"""
from __future__ import annotations

import torch

from ..model.moe import AdaptedCLIP, MoEAdapter


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
