"""The models and step closures the sections time: one backbone with MoE, dense or plain adapters, or none
(`StepFactory`), plus the autocast context and the shape helpers they share."""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import optimizer as optim
from ..engine.slice_guard import SliceGuard
from ..errors import MtilError
from ..model import backbone, moe
from .baselines import attach_plain
from .settings import Settings, resolve_model, scaled_hidden


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise MtilError(f"bench precision must be fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


def model_width(clip: nn.Module) -> int:
    return next(iter(backbone.towers(clip).values())).resblocks[0].ln_2.normalized_shape[0]


def image_size(clip: nn.Module) -> tuple[int, int]:
    size = clip.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def randomize(adapted: moe.AdaptedCLIP, seed: int) -> None:
    """Trained-looking adapters: non-zero up-projections and routers that spread samples over the experts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.layers:
            for p in (layer.w_up, layer.b_up):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            layer.router.copy_(torch.randn(layer.router.shape, generator=g))


def clip_logits(clip, images, tokens):
    img = clip.encode_image(images, normalize=True)
    txt = clip.encode_text(tokens, normalize=True)
    return clip.logit_scale.exp() * img @ txt.t()


class StepFactory:
    """Builds the step closures of one backbone: MoE / dense / plain adapters, frozen forward."""

    def __init__(self, s: Settings, device: torch.device):
        self.s, self.device = s, device
        torch.manual_seed(s.seed)
        self.backbone = backbone.load(resolve_model(s.model), None, device=device)
        self.clip = self.backbone.model
        self.width = model_width(self.clip)
        self.hidden = s.hidden or scaled_hidden(self.width)
        h, w = image_size(self.clip)
        g = torch.Generator().manual_seed(s.seed)
        self.images = torch.randn(s.batch, 3, h, w, generator=g).to(device)
        self.labels = torch.randint(0, s.classes, (s.batch,), generator=g).to(device)
        self.tokens = self.backbone.tokenizer([f"a photo of a class {i} thing." for i in range(s.classes)]).to(device)
        self.token_count = {"image": (h // self.clip.visual.patch_size[0]) * (w // self.clip.visual.patch_size[1]) + 1,
                            "text": int(self.tokens.shape[1])}

    def adapted(self, experts: int, top_k: int) -> moe.AdaptedCLIP:
        torch.manual_seed(self.s.seed)
        model = moe.attach(copy.deepcopy(self.clip), num_experts=experts, top_k=top_k, hidden=self.hidden,
                           num_routers=self.s.routers)
        randomize(model, self.s.seed)
        return model

    def train_step(self, model: nn.Module, params: list, route: int | None = 0) -> Callable[[], float]:
        """forward + backward + AdamW step, as `Trainer.fit` runs it: MoE models with `SlotAdamW` and the
        `SliceGuard`'s slot masks, the plain adapter with torch's AdamW."""
        if isinstance(model, moe.AdaptedCLIP):
            opt = optim.build_optimizer(model, 1e-4, 0.0)
            SliceGuard(model, opt, route)
            model.routing.tracking = True
        else:
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        model.train()
        cast = autocast(self.device, self.s.precision)
        images, tokens, labels = self.images, self.tokens, self.labels

        def step() -> float:
            with cast:
                logits = model(images, tokens, route) if isinstance(model, moe.AdaptedCLIP) else clip_logits(model, images, tokens)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.2)
            value = float(loss.detach())  # the training loop reads the loss every step (NaN check)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return value
        return step

    def moe_step(self, experts: int, top_k: int) -> tuple[Callable[[], float], moe.AdaptedCLIP]:
        model = self.adapted(experts, top_k)
        return self.train_step(model, model.adapter_parameters()), model

    def plain_step(self) -> Callable[[], float]:
        clip = copy.deepcopy(self.clip)
        torch.manual_seed(self.s.seed)
        adapters = attach_plain(clip, self.hidden)
        return self.train_step(clip, list(adapters.parameters()))

    def frozen_forward(self) -> Callable[[], None]:
        clip = copy.deepcopy(self.clip).eval()
        cast = autocast(self.device, self.s.precision)

        @torch.no_grad()
        def forward():
            with cast:
                clip_logits(clip, self.images, self.tokens)
        return forward
