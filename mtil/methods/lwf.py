"""`lwf`: Learning without Forgetting as ZSCL's `scripts/lwf.sh` runs it on CLIP.

Full fine-tuning (`finetune`) plus distillation (`distill`): the teacher is the model the task started from (the
previous task's result; zero-shot CLIP for the first task: lwf.sh passes `--ref-model` of the previous task), the
reference images are the current task's own training images with the evaluation preprocessing, drawn by a
separate seeded shuffle (its `--ref-dataset` is the current dataset), the texts are the task's class prompts
(first template); image and text losses at T = 2. Between tasks: nothing.
"""
from __future__ import annotations

from ..policies import TrainContext
from .base import MethodFacts, register
from .distill import Distilling, ImageList


@register("lwf")
class LwF(Distilling):
    teacher_is_start = keeps_start = True

    @classmethod
    def from_config(cls, cfg) -> "LwF":
        return cls(MethodFacts.from_config(cfg), **dict(cfg.method.lwf), **cls.finetune_args(cfg))

    def reference_set(self, task, ctx: TrainContext) -> ImageList:
        return ImageList([(task.name, task.train)], [(0, i) for i in range(len(task.train))], self.transform,
                         self.facts.bad_images)
