"""`wiseft`: WiSE-FT as ZSCL's `scripts/WiSE_finetune.sh` runs it (`--wise_merge --wise_ft_model n
--wise_ft_alpha 0.8`): full fine-tuning (`finetune`), then after each task the weights become
  alpha x fine-tuned + (1 - alpha) x anchor,
every trained parameter, where the anchor is the model the task started from (`anchor: previous`, the script's
`n`; zero-shot CLIP for the first task) or zero-shot CLIP (`anchor: zero-shot`). The interpolated weights are the
task's result: evaluated, and the start of the next task.
"""
from __future__ import annotations

import torch

from ..policies import TrainContext
from .base import MethodFacts, register
from .finetune import FineTune


@register("wiseft")
class WiSEFT(FineTune):
    def __init__(self, facts: MethodFacts, *, alpha: float = 0.8, anchor: str = "previous", **finetune):
        super().__init__(facts, **finetune)
        self.alpha, self.anchor = alpha, anchor
        self.keeps_start = anchor == "previous"
        self.zero_shot: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, cfg) -> "WiSEFT":
        return cls(MethodFacts.from_config(cfg), **dict(cfg.method.wiseft), **cls.finetune_args(cfg))

    def attach(self, backbone, accelerator, tasks, fresh: bool):
        model = super().attach(backbone, accelerator, tasks, fresh)
        if self.anchor == "zero-shot":
            self.zero_shot = self.weights()   # before a resume loads the trained weights
        return model

    @torch.no_grad()
    def end_task(self, ctx: TrainContext) -> None:
        anchor = self.start if self.anchor == "previous" else self.zero_shot
        for name, p in self.named_weights().items():
            p.copy_(p * self.alpha + anchor[name] * (1 - self.alpha))
        self.log(ctx, "wise-ft", alpha=self.alpha, anchor=self.anchor)
