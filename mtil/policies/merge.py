"""`merge` (expert merging in MoE, composed with freeze).

Every `merge.every` steps of a task (after `merge.warmup` steps), in every layer: the two experts selected most
often in the current window, a and b, are averaged (every expert tensor, W = (W_a + W_b) / 2) into the
least-used non-frozen slot c (c not in {a, b}); c's optimizer state is reset and the window restarts. The router
keeps learning whether to pick the merged expert; `copy_router` writes the mean of a's and b's columns into c's
column of the current task's router only. With `merge.window` set, only the last `window` steps before a
merge are counted. A layer with fewer than two selected experts or no eligible slot is skipped and logged.
A merge due on the task's last step is skipped and logged (`merge.last_step: skip`): its target would otherwise
be frozen or evaluated without a single training step; `merge.last_step: merge` performs it (earlier mtil).
"""
import logging

import torch

from .base import RunFacts, TrainContext, register
from .freeze import Freeze

log = logging.getLogger(__name__)


@register("merge")
class Merge(Freeze):
    def __init__(self, run: RunFacts, count: int | None = None, *, every: int, warmup: int, window: int | None,
                 copy_router: bool, frozen_sources: bool, last_step: str):
        super().__init__(run, count)
        self.every, self.warmup, self.window = every, warmup, window
        self.copy_router, self.frozen_sources, self.last_step = copy_router, frozen_sources, last_step

    @classmethod
    def from_config(cls, run: RunFacts, section) -> "Merge":
        m = section.merge
        return cls(run, section.freeze.count, every=m.every, warmup=m.warmup, window=m.window,
                   copy_router=m.copy_router, frozen_sources=m.frozen_sources, last_step=m.last_step)

    def after_step(self, ctx: TrainContext) -> None:
        step, every = ctx.step, self.every   # the window restarts with each task (training loop) and each merge
        if self.window is not None and self.window < every and step % every == every - self.window:
            self.tracker.new_window()
        if step < self.warmup or step % every != 0:
            return
        if step >= self.run.iterations and self.last_step == "skip":
            log.info("task %s: the merge due on its last step (%d) is skipped (policy.merge.last_step=skip)",
                     ctx.task_name, step)
            self.log(ctx, "merge-skipped", None, [], reason="last step of the task: the merged expert would be "
                                                            "evaluated without a training step (merge.last_step)")
            return
        for layer, counts in zip(self.model.layers, self.tracker.window()):
            self.merge_layer(ctx, layer, counts)
        self.tracker.new_window()

    @torch.no_grad()
    def merge_layer(self, ctx: TrainContext, layer, counts: torch.Tensor) -> None:
        sources = layer.active if self.frozen_sources else layer.active & ~layer.frozen
        ranked = torch.argsort(counts.masked_fill(~sources, -1), descending=True, stable=True)
        a, b = int(ranked[0]), int(ranked[1]) if len(ranked) > 1 else -1
        if b < 0 or counts[a] <= 0 or counts[b] <= 0 or not bool(sources[b]):
            self.log(ctx, "merge-skipped", layer, [], reason="fewer than two selected experts in the window")
            return
        eligible = layer.active & ~layer.frozen
        eligible[[a, b]] = False
        if not bool(eligible.any()):
            self.log(ctx, "merge-skipped", layer, [a, b], reason="no eligible (non-frozen, unused) slot")
            return
        c = int(torch.argmin(counts.masked_fill(~eligible, torch.iinfo(counts.dtype).max)))
        for tensor in layer.expert_tensors():
            tensor.data[c] = (tensor.data[a] + tensor.data[b]) / 2
        if self.copy_router:  # only the current task's router: the others are never written
            r = self.router_of(ctx)
            for tensor in layer.router_tensors():
                tensor.data[r, :, c] = (tensor.data[r, :, a] + tensor.data[r, :, b]) / 2
        ctx.slot_changed(layer, c, router_column=self.copy_router)
        self.log(ctx, "merge", layer, [a, b, c], counts=[int(counts[a]), int(counts[b]), int(counts[c])])
