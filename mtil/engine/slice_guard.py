"""Which adapter slices an optimizer step may touch: the reference's update for every slot.

In MoE-Adapters every expert and every task's router is its own Parameter, so a step leaves untouched what had no
gradient (an expert no sample was routed to, the routers of other tasks) or is not trained (a frozen expert,
`requires_grad=False`). Here experts and routers are slices of stacked tensors, so `SliceGuard` gives `SlotAdamW`,
before each step, the slots it may update:
- expert slots: selected by at least one sample since the last step (`MoEAdapter.step_selected`), active, not
  frozen;
- router slots: the columns of the active experts in the router being trained (the other routers are locked).
Everything else keeps its values, both Adam moments and its step count bit-identical. The gradients of locked
expert slots are zeroed too (`zero_locked_grads`, also called before gradient clipping), so a frozen expert never
counts in a gradient norm, as a Parameter without a gradient would not (the gradient of another task's router is
exactly zero already: the forward reads only the current router's slice).

`update="data-parallel"` (`train.update_mode`) is the update of MoE-Adapters' released script, which wraps the model in
`torch.nn.DataParallel` over two GPUs: there the gradients of the replicas are summed into every parameter that
requires one, so an expert no sample selected gets a zero gradient instead of None and torch's AdamW steps it (its
moments decay, its step count grows, and it moves by the momentum of earlier steps). Every active, unfrozen expert
slot then steps every step; frozen experts and the other tasks' routers stay locked as in the single-GPU update.
"""
from __future__ import annotations

import torch

from ..errors import MtilError
from ..model.moe import AdaptedCLIP, MoEAdapter
from .optimizer import SlotAdamW

UPDATES = ("single-gpu", "data-parallel")


class SliceGuard:
    """Optimizer step hooks that restrict each `SlotAdamW` step to the slots the reference would update."""

    def __init__(self, model: AdaptedCLIP, optimizer: torch.optim.Optimizer, router: int,
                 update: str = "single-gpu"):
        if update not in UPDATES:
            raise MtilError(f"train.update_mode must be one of {', '.join(UPDATES)}, got {update!r}")
        if not isinstance(optimizer, SlotAdamW):
            raise MtilError(f"SliceGuard needs the adapters' SlotAdamW, got {type(optimizer).__name__}")
        self.layers = model.layers
        self.optimizer = optimizer
        self.router = router
        self.every_expert = update == "data-parallel"
        for layer in self.layers:
            layer.step_selected.zero_()
        self._handles = [optimizer.register_step_pre_hook(self._before),
                         optimizer.register_step_post_hook(self._after)]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def masks(self, layer: MoEAdapter) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert slots [E], router slots [R, E]) this step may update."""
        experts = layer.active & ~layer.frozen
        if not self.every_expert:
            experts = experts & layer.step_selected
        routers = torch.zeros(layer.router.shape[0], layer.num_experts, dtype=torch.bool, device=experts.device)
        routers[self.router] = layer.active
        return experts, routers

    @torch.no_grad()
    def zero_locked_grads(self) -> None:
        for layer in self.layers:
            experts, _ = self.masks(layer)
            if bool(experts.all()):
                continue
            for p in layer.expert_tensors():
                if p.grad is not None:
                    p.grad[~experts] = 0

    @torch.no_grad()
    def _before(self, optimizer, args, kwargs) -> None:
        self.zero_locked_grads()
        masks = {}
        for layer in self.layers:
            experts, routers = self.masks(layer)
            for p in layer.expert_tensors():
                masks[p] = experts.view([-1] + [1] * (p.dim() - 1))
            for p in layer.router_tensors():
                masks[p] = routers.unsqueeze(1)
        self.optimizer.set_masks(masks)

    @torch.no_grad()
    def _after(self, optimizer, args, kwargs) -> None:
        for layer in self.layers:
            layer.step_selected.zero_()
