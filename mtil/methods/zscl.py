"""`zscl`: ZSCL as its `scripts/ZSCL.sh` runs it (`--method ZSCL --image_loss --text_loss --we --avg_freq 100
--l2 1 --ref-dataset ImageNet --ref-sentences conceptual_captions`).

Full fine-tuning (`finetune`) plus, every step:
  * distillation (`distill`) against zero-shot CLIP (`--ref-model` unset) on a batch of reference images (the
    reference set's images, evaluation preprocessing, a seeded shuffle) over the reference set's sentences, image
    and text losses at T = 2;
  * `l2` x the squared L2 distance of the trained parameters to the weights the task started from
    (helpers.l2_loss: sum over parameters of the summed squared differences);
and the weight ensemble (helpers.merge_we): a running average `avg = (avg * n + weights) / (n + 1)`, started
from the task's start weights (n = 0) and updated after the update of every iteration i with i % avg_freq == 0
(i = 0, avg_freq, ...). The reference loops over iterations 0..iterations (`range(total_iterations + 1)`),
the last one at learning rate 0 (its cosine schedule ends there), which moves no weight; mtil runs the
`iterations` updates and takes that last iteration's ensemble snapshot, when iterations % avg_freq == 0, from the
final weights, which is what the reference averages there. The average is the task's result: evaluated, and the
start of the next task (the reference saves the ensemble model).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.reference import load_reference
from ..policies import TrainContext
from .base import MethodFacts, register
from .distill import Distilling, ImageList


@register("zscl")
class ZSCL(Distilling):
    keeps_start = True

    def __init__(self, facts: MethodFacts, *, reference: str = "Reference", avg_freq: int = 100, l2: float = 1.0,
                 **distill):
        super().__init__(facts, **distill)
        self.reference, self.avg_freq, self.l2 = reference, avg_freq, l2
        self.average: dict[str, torch.Tensor] | None = None   # the weight ensemble of the current task
        self.snapshots = 0                                     # snapshots averaged into it (the reference's we_n)
        self._reference = None

    @classmethod
    def from_config(cls, cfg) -> "ZSCL":
        return cls(MethodFacts.from_config(cfg), **dict(cfg.method.zscl), **cls.finetune_args(cfg))

    def attach(self, backbone, accelerator, tasks, fresh: bool):
        self._reference = load_reference(self.facts.data_root, self.reference)   # fail before any training
        return super().attach(backbone, accelerator, tasks, fresh)

    def reference_texts(self, task) -> list[str]:
        return self._reference[1]

    def reference_set(self, task, ctx: TrainContext) -> ImageList:
        images = self._reference[0]
        return ImageList([(self.reference, images)], [(0, i) for i in range(len(images))], self.transform,
                         self.facts.bad_images)

    def begin_task(self, ctx: TrainContext, optimizer) -> None:
        super().begin_task(ctx, optimizer)
        if ctx.step == 0 and self.avg_freq:
            self.average, self.snapshots = self.weights(), 0

    def regularize(self, loss, ref_images, ref_features, ctx: TrainContext) -> torch.Tensor:
        if self.l2 > 0:
            term = self.l2 * self.l2_distance()
            self.loss_terms["l2"] = term.detach()
            loss = loss + term
        return super().regularize(loss, ref_images, ref_features, ctx)

    def l2_distance(self) -> torch.Tensor:
        """helpers.l2_loss: sum over the trained parameters of sum((p - p_start)^2)."""
        return sum(F.mse_loss(p, self.start[n], reduction="sum") for n, p in self.named_weights().items())

    @torch.no_grad()
    def snapshot(self) -> None:
        """helpers.merge_we: one more snapshot of the current weights in the running average."""
        self.snapshots += 1
        for name, p in self.named_weights().items():
            self.average[name].mul_(self.snapshots).add_(p).div_(1.0 + self.snapshots)

    def after_step(self, ctx: TrainContext) -> None:
        if self.avg_freq and (ctx.step - 1) % self.avg_freq == 0:   # after the update of iteration ctx.step - 1
            self.snapshot()

    def end_task(self, ctx: TrainContext) -> None:
        super().end_task(ctx)
        if not self.avg_freq:
            return
        if self.facts.iterations % self.avg_freq == 0:
            self.snapshot()   # the reference's iteration `iterations` (learning rate 0: the final weights)
        self.load_weights(self.average)
        self.log(ctx, "weight-ensemble", snapshots=self.snapshots)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "average": self.average, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.average, self.snapshots = self.on_device(state["average"]), state["snapshots"]
