"""`finetune`: continual fine-tuning of the whole CLIP, as ZSCL's `mtil/src/models/finetune.py` runs it
(`--method finetune --train-mode=whole`; its scripts: label smoothing 0.2, 1000 iterations, batch 64, lr 1e-5 and
5e-5 for Aircraft and MNIST).

What trains: every parameter of both encoders but the logit scale (`train_mode: image`: the image encoder only),
with `torch.optim.AdamW` (betas (0.9, `beta2`), weight decay `train.weight_decay`), a fresh optimizer per task and
the gradients cleared every step. Loss: the CLIP logits of the batch against the task's class prompts (first
template; the text features are recomputed with gradients every step), cross-entropy with label smoothing. Between
tasks: nothing, the next task starts from these weights. Evaluation: every test set through the current weights
(one model for all datasets, as ZSCL evaluates; no selector, no zero-shot path).

`FineTune` is the base of lwf, icarl, wiseft and zscl (and of zero-shot, which never trains): they add loss terms
on a batch of reference images in `regularize` and operations between tasks in `end_task`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import moe
from ..policies import TrainContext
from .base import Method, MethodFacts, register


class WholeCLIP(nn.Module):
    """The training forward of a fine-tuned CLIP: the batch's logits against the class prompts, and the normalized
    image features of extra reference images, which run through the same image-tower call (so one forward of
    this module is all a step needs, and data-parallel training synchronises every gradient)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                ref_images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        x = images if ref_images is None else torch.cat([images, ref_images])
        img = self.clip.encode_image(x, normalize=True)
        txt = self.clip.encode_text(tokens, normalize=True)
        return self.clip.logit_scale.exp() * img[:n] @ txt.t(), img[n:]


@register("finetune")
class FineTune(Method):
    lr_table = "method.finetune.lr_per_task"
    keeps_start = False       # subclasses that need the weights each task started from (anchor, teacher)

    def __init__(self, facts: MethodFacts, *, train_mode: str = "whole", lr: float = 1e-5,
                 lr_per_task: dict | None = None, beta2: float = 0.999, grad_checkpointing: bool = False):
        super().__init__(facts)
        self.train_mode, self.lr, self.lr_per_task = train_mode, lr, dict(lr_per_task or {})
        self.beta2, self.grad_checkpointing = beta2, grad_checkpointing
        self.clip: nn.Module | None = None
        self.start: dict[str, torch.Tensor] | None = None   # the weights the current task started from

    @classmethod
    def finetune_args(cls, cfg) -> dict:
        return dict(cfg.method.finetune)

    @classmethod
    def from_config(cls, cfg) -> "FineTune":
        return cls(MethodFacts.from_config(cfg), **cls.finetune_args(cfg))

    # ---- set-up ---------------------------------------------------------------------------------------------
    def trains_parameter(self, name: str) -> bool:
        """ZSCL's --train-mode: whole = every parameter but logit_scale; image = model.visual's."""
        return name != "logit_scale" if self.train_mode == "whole" else name.startswith("visual.")

    def attach(self, backbone, accelerator, tasks, fresh: bool) -> moe.AdaptedCLIP:
        self.clip, self.device, self.tasks = backbone.model, accelerator.device, list(tasks)
        self.transform, self.tokenizer = backbone.preprocess_val, backbone.tokenizer
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        for name, p in self.clip.named_parameters():
            p.requires_grad_(self.trains and self.trains_parameter(name))
        self.clip.set_grad_checkpointing(self.grad_checkpointing)
        self.module = WholeCLIP(self.clip)
        self.model = moe.attach(self.clip, towers=())   # no adapters: the evaluator reads the CLIP itself
        return self.model

    def eval_mode(self, configured: str) -> str:
        return "whole-model"

    def named_weights(self) -> dict[str, nn.Parameter]:
        """The trained parameters by name (in model order)."""
        return {n: p for n, p in self.clip.named_parameters() if self.trains_parameter(n)}

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the trained parameters."""
        return {n: p.detach().clone() for n, p in self.named_weights().items()}

    def on_device(self, weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        """Saved weights (a checkpoint is read onto the CPU) on the model's device."""
        return None if weights is None else {n: w.to(self.device) for n, w in weights.items()}

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor], into: nn.Module | None = None) -> None:
        params = dict((into or self.clip).named_parameters())
        for n, w in weights.items():
            params[n].copy_(w)

    # ---- one task -------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.named_weights().values())

    def clip_gradients(self, accelerator, max_norm: float) -> None:
        accelerator.clip_grad_norm_(self.trainable_parameters(), max_norm)

    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """torch's AdamW as ZSCL builds it; its fused kernel (the same update, one kernel: 6x faster on a CPU) where
        torch has one for the device."""
        args = dict(lr=lr, weight_decay=weight_decay, betas=(0.9, self.beta2))
        try:
            return torch.optim.AdamW(self.trainable_parameters(), fused=True, **args)
        except (RuntimeError, TypeError):  # no fused kernel for this device / dtype
            return torch.optim.AdamW(self.trainable_parameters(), **args)

    def begin_task(self, ctx: TrainContext, optimizer) -> None:
        if self.keeps_start and ctx.step == 0:
            self.start = self.weights()

    def reference_images(self, ctx: TrainContext) -> torch.Tensor | None:
        """Extra images run through the image tower with the batch (None: none this step)."""
        return None

    def regularize(self, loss: torch.Tensor, ref_images: torch.Tensor | None, ref_features: torch.Tensor,
                   ctx: TrainContext) -> torch.Tensor:
        """The loss with the method's extra terms added (plain fine-tuning has none)."""
        return loss

    def loss(self, model, images, labels, tokens, ctx: TrainContext) -> torch.Tensor:
        ref = self.reference_images(ctx)
        logits, ref_features = model(images, tokens, ref)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))   # at least fp32 under autocast
        loss = F.cross_entropy(logits, labels, label_smoothing=self.facts.label_smoothing)
        self.loss_terms = {"ce": loss.detach()}
        return self.regularize(loss, ref, ref_features, ctx)

    # ---- records --------------------------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.named_weights().values()) if self.trains else 0
        return {"total": sum(p.numel() for p in self.clip.parameters()), "trainable": trainable}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "weights": self.weights() if self.trains else {}, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.load_weights(state["weights"])
        self.start = self.on_device(state["start"])
