"""Mixture-of-experts adapters for open_clip residual blocks.

Placement (MoE-Adapters, `ResidualAttentionBlock.forward`): in each adapted block the adapter reads the residual
stream after attention, the un-normalised `x` that enters `ln_2`, and its output is added beside the MLP's:
`x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) + moe(x)`. `adapter_input="ln_2"` feeds `ln_2(x)` instead (an
option). It is attached with hooks (a forward pre-hook on `block.ln_2` reads `x`, a forward hook on `block.mlp`
adds the adapter's output), so open_clip's own modules and weight names stay untouched.

Experts are stacked tensors (`w_down [E, d, h]`, `w_up [E, h, d]`) and a forward pass gathers the selected
experts' weights per sample and runs two batched matmuls: no Python loop over experts. Routing is per sample,
from the first token of the adapter's input (CLS in the image tower, SOT in the text tower). Because the text
tower attends causally, its SOT token sees only itself: the same for every prompt in every block, so text
routing depends on the router (task) only and every prompt of a task takes the same experts.

Expert init `lora` (MoE-Adapters' `Adapter(init_option="lora")`): down-projection Kaiming-uniform (a = sqrt 5),
its bias, the up-projection and its bias zero; routers start at zero. So at init an adapted model computes
exactly what plain CLIP computes. Masks: `active` (inactive experts are never routed to), `frozen` (see
`mtil.engine.slice_guard`, which keeps frozen experts bit-identical through optimizer steps) and `router_experts` [R, E]: the
experts each router may select, fixed to the active set when its task's training ends (`close_router`), so an
old task's router never reaches experts added after it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MtilError
from . import TOWERS, backbone

INPUTS = ("residual", "ln_2")
INITS = ("lora", "linear", "fresh")


@dataclass
class Routing:
    """Shared by every adapter of one model: which router each sample uses, and whether to count usage.

    `route` is None (router 0 for all), an int, or a LongTensor [N] of router ids; -1 switches the adapters
    off for that sample (it then gets plain CLIP's output).
    """
    route: int | torch.Tensor | None = None
    tracking: bool = False
    balance: bool = False          # compute the load-balancing loss in training forwards
    layers: list = field(default_factory=list)


class MoEAdapter(nn.Module):
    """One MoE adapter layer: E bottleneck experts, R routers, top-k or dense gating."""

    def __init__(self, dim: int, num_experts: int, hidden: int, top_k: int, num_routers: int, gating: str,
                 noisy_gating: bool, dropout: float, scale: float, routing: Routing, batch_first: bool = True,
                 tower: str = "image", block: int = 0, init: str = "lora"):
        super().__init__()
        if gating not in ("topk", "dense"):
            raise MtilError(f"moe.gating must be 'topk' or 'dense', got {gating!r}")
        if init not in INITS[:2]:
            raise MtilError(f"moe.expert_init must be {' or '.join(INITS[:2])}, got {init!r}")
        if not 1 <= top_k <= num_experts:
            raise MtilError(f"moe.top_k must be between 1 and moe.num_experts={num_experts}, got {top_k}")
        self.dim, self.num_experts, self.hidden, self.top_k = dim, num_experts, hidden, top_k
        self.gating, self.noisy_gating, self.scale, self.batch_first = gating, noisy_gating, scale, batch_first
        self.tower, self.block, self.init = tower, block, init
        self.routing = routing
        self.w_down = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b_down = nn.Parameter(torch.empty(num_experts, hidden))
        self.w_up = nn.Parameter(torch.zeros(num_experts, hidden, dim))
        self.b_up = nn.Parameter(torch.zeros(num_experts, dim))
        self.router = nn.Parameter(torch.zeros(num_routers, dim, num_experts))
        self.noise = nn.Parameter(torch.zeros(num_routers, dim, num_experts)) if noisy_gating else None
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("active", torch.ones(num_experts, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros(num_experts, dtype=torch.bool))
        self.register_buffer("router_experts", torch.ones(num_routers, num_experts, dtype=torch.bool))
        self.register_buffer("window_counts", torch.zeros(num_experts, dtype=torch.long))
        self.register_buffer("task_counts", torch.zeros(num_experts, dtype=torch.long))
        self.register_buffer("gate_mass", torch.zeros(num_experts))
        # experts that received at least one sample in the training forwards since the last optimizer step (the
        # reference's experts are separate Parameters: one that got no sample has grad None and AdamW skips it)
        self.register_buffer("step_selected", torch.zeros(num_experts, dtype=torch.bool), persistent=False)
        self.aux_loss: torch.Tensor | None = None
        for e in range(num_experts):
            self.reset_expert(e)

    # ---- expert management -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.tower}.{self.block}"

    @torch.no_grad()
    def reset_expert(self, e: int, init: str | None = None) -> None:
        """Fresh init of expert e. `lora` (MoE-Adapters): down-projection Kaiming-uniform (a = sqrt 5), everything
        else zero. `linear`: down-projection (weight and bias) as nn.Linear's default, up-projection zero.
        `fresh`: both projections as nn.Linear's default (DynamicMoE's new experts). None = the layer's init."""
        init = self.init if init is None else init
        if init not in INITS:
            raise MtilError(f"expert init must be one of {', '.join(INITS)}, got {init!r}")
        bound_d = 1.0 / math.sqrt(self.dim)
        nn.init.kaiming_uniform_(self.w_down[e].t(), a=math.sqrt(5))  # [h, d] view: fan_in = d, bound 1/sqrt(d)
        if init == "lora":
            self.b_down[e].zero_()
        else:
            self.b_down[e].uniform_(-bound_d, bound_d)
        if init == "fresh":
            bound_h = 1.0 / math.sqrt(self.hidden)
            nn.init.kaiming_uniform_(self.w_up[e].t(), a=math.sqrt(5))
            self.b_up[e].uniform_(-bound_h, bound_h)
        else:
            self.w_up[e].zero_()
            self.b_up[e].zero_()

    def expert_tensors(self) -> list[nn.Parameter]:
        """The per-expert parameter tensors (first dim = expert)."""
        return [self.w_down, self.b_down, self.w_up, self.b_up]

    def router_tensors(self) -> list[nn.Parameter]:
        """The router parameter tensors (dims: router, input, expert)."""
        return [self.router] + ([self.noise] if self.noise is not None else [])

    def expert_numel(self) -> int:
        return sum(t[0].numel() for t in self.expert_tensors())

    # ---- forward -------------------------------------------------------------------------------------------
    def _routes(self, n: int, device) -> torch.Tensor:
        route = self.routing.route
        if route is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        if isinstance(route, int):
            return torch.full((n,), route, dtype=torch.long, device=device)
        if route.shape[0] != n:
            raise MtilError(f"routing has {route.shape[0]} router ids for a batch of {n}")
        return route.to(device)

    def gates(self, tok: torch.Tensor, routes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router decision for first tokens `tok` [N, d]: (expert ids [N, k], gate weights [N, k], full gates [N, E])."""
        r = routes.clamp(min=0)
        clean = torch.einsum("nd,nde->ne", tok, self.router[r].to(tok.dtype))
        logits = clean
        noise_std = None
        if self.training and self.noise is not None:
            noise_std = F.softplus(torch.einsum("nd,nde->ne", tok, self.noise[r].to(tok.dtype))) + 1e-2
            logits = clean + torch.randn_like(clean) * noise_std
        allowed = self.active.unsqueeze(0) & self.router_experts[r]          # [N, E]
        logits = logits.masked_fill(~allowed, float("-inf"))
        if self.gating == "dense":
            n_active = int(self.active.sum())
            idx = self.active.nonzero().squeeze(1).expand(tok.shape[0], n_active)
            weights = torch.softmax(logits.gather(1, idx), dim=1)
        else:
            # a sample whose router allows fewer than k experts gets weight 0 on the -inf picks
            k = min(self.top_k, int(allowed.sum(1).max()))
            top, idx = logits.topk(k, dim=1)
            weights = torch.softmax(top, dim=1)
        weights = weights * (routes >= 0).unsqueeze(1).to(weights.dtype)
        full = torch.zeros_like(clean).scatter(1, idx, weights)
        if self.training and self.routing.balance:
            self.aux_loss = self._balance_loss(full, clean, logits, noise_std)
        return idx, weights, full

    def _balance_loss(self, full, clean, noisy, noise_std) -> torch.Tensor:
        """Shazeer et al. (2017): CV^2 of expert importance plus CV^2 of the smooth load estimate."""
        active = self.active
        importance = full.sum(0)[active]
        if noise_std is not None and self.gating == "topk":
            k = min(self.top_k, int(active.sum()))
            if k < int(active.sum()):
                top = noisy.topk(k + 1, dim=1).values
                in_top = noisy >= top[:, k - 1:k]
                threshold = torch.where(in_top, top[:, k:k + 1], top[:, k - 1:k])
                load = torch.special.ndtr((clean - threshold) / noise_std).sum(0)[active]
            else:
                load = importance.new_full(importance.shape, float(full.shape[0]))
        else:
            load = (full > 0).float().sum(0)[active]

        def cv2(v):
            return v.float().var(unbiased=False) / (v.float().mean() ** 2 + 1e-10) if v.numel() > 1 else v.sum() * 0
        return cv2(importance) + cv2(load)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: the adapter input (residual stream or ln_2 output), [N, L, d] (or [L, N, d] when not batch-first).
        Returns the adapter output in the same layout."""
        x = h if self.batch_first else h.transpose(0, 1)
        n = x.shape[0]
        routes = self._routes(n, x.device)
        idx, weights, full = self.gates(x[:, 0], routes)
        out = self.dispatch(x, idx, weights)
        if self.training and torch.is_grad_enabled():
            self.step_selected[idx[weights > 0]] = True
        if self.routing.tracking and self.training:
            self._count(idx, full, routes)
        return out if self.batch_first else out.transpose(0, 1)

    def dispatch(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Vectorized expert mixture: gather the chosen experts' weights per sample, two batched matmuls."""
        dtype = x.dtype
        w_down = self.w_down[idx].to(dtype)                       # [N, k, d, h]
        hid = torch.einsum("nld,nkdh->nklh", x, w_down) + self.b_down[idx].to(dtype).unsqueeze(2)
        hid = self.dropout(F.relu(hid)) * weights.to(dtype)[:, :, None, None]
        w_up = self.w_up[idx].to(dtype)                           # [N, k, h, d]
        out = torch.einsum("nklh,nkhd->nld", hid, w_up)
        out = out + torch.einsum("nk,nkd->nd", weights.to(dtype), self.b_up[idx].to(dtype)).unsqueeze(1)
        return out * self.scale

    @torch.no_grad()
    def _count(self, idx: torch.Tensor, full: torch.Tensor, routes: torch.Tensor) -> None:
        """Count, per sample, the experts among its top-k (dense gating: the k largest gates); a pick its router
        may not select (fewer allowed experts than k) is not counted."""
        if self.gating == "dense":
            k = min(self.top_k, int(self.active.sum()))
            idx = full.topk(k, dim=1).indices
        allowed = self.active.unsqueeze(0) & self.router_experts[routes.clamp(min=0)]
        chosen = allowed.gather(1, idx) & (routes >= 0).unsqueeze(1)
        counts = torch.bincount(idx[chosen], minlength=self.num_experts)
        self.window_counts += counts
        self.task_counts += counts
        self.gate_mass += full[routes >= 0].float().sum(0)


class _AdapterHook:
    """Hooks of one block: a forward pre-hook on `ln_2` keeps its input (the residual stream after attention);
    a forward hook on `mlp` adds the adapter's output, computed from that input or from `ln_2(x)`."""

    def __init__(self, adapter: MoEAdapter, adapter_input: str):
        self.adapter = adapter
        self.adapter_input = adapter_input
        self.residual: torch.Tensor | None = None

    def keep_residual(self, module, inputs):
        self.residual = inputs[0]

    def __call__(self, module, inputs, output):
        residual, self.residual = self.residual, None
        route = self.adapter.routing.route
        if isinstance(route, int) and route < 0:
            return output
        if self.adapter_input == "ln_2":
            return output + self.adapter(inputs[0])
        if residual is None:
            raise MtilError(f"adapter {self.adapter.name}: the block's ln_2 did not run before its mlp; "
                            "this block layout needs moe.adapter_input=ln_2")
        return output + self.adapter(residual)


class AdaptedCLIP(nn.Module):
    """A frozen open_clip model with MoE adapters in its residual blocks.

    `encode_image(images, route)` / `encode_text(tokens, route)` take a router id (int) or one per sample
    (LongTensor; -1 = plain CLIP for that sample). `layers` lists the adapters in (tower, block) order.
    """

    def __init__(self, clip: nn.Module, layers: list[MoEAdapter], routing: Routing):
        super().__init__()
        self.clip = clip
        self.routing = routing
        self._layers = layers  # also registered inside clip's blocks (as `block.moe`)

    @property
    def layers(self) -> list[MoEAdapter]:
        return self._layers

    def train(self, mode: bool = True):
        """Only the adapters switch mode; the backbone always stays in eval mode."""
        super().train(False)
        for layer in self._layers:
            layer.train(mode)
        self.training = mode
        return self

    def _encode(self, fn, inputs, route, normalize: bool):
        previous = self.routing.route
        self.routing.route = route
        try:
            return fn(inputs, normalize=normalize)
        finally:
            self.routing.route = previous

    def encode_image(self, images: torch.Tensor, route=0, normalize: bool = True) -> torch.Tensor:
        return self._encode(self.clip.encode_image, images, route, normalize)

    def encode_text(self, tokens: torch.Tensor, route=0, normalize: bool = True) -> torch.Tensor:
        return self._encode(self.clip.encode_text, tokens, route, normalize)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, route=0) -> torch.Tensor:
        """Training forward: CLIP logits of images against the prompts `tokens` (one per class), both towers
        routed by `route`. Going through `forward` is what lets DDP synchronise the adapter gradients."""
        img = self.encode_image(images, route)
        txt = self.encode_text(tokens, route)
        return self.clip.logit_scale.exp() * img @ txt.t()

    @torch.no_grad()
    def open_router(self, router: int) -> None:
        """Router `router` starts (or resumes) training: it may select every active expert, old or new."""
        for layer in self._layers:
            layer.router_experts[router] = True

    @torch.no_grad()
    def close_router(self, router: int) -> None:
        """Its task's training ended: from now on it selects only the experts active now."""
        for layer in self._layers:
            layer.router_experts[router] = layer.active

    def aux_loss(self) -> torch.Tensor:
        losses = [layer.aux_loss for layer in self._layers if layer.aux_loss is not None]
        return torch.stack(losses).mean() if losses else torch.zeros(())

    # ---- parameter accounting ------------------------------------------------------------------------------
    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self._layers for p in layer.parameters()]

    def param_counts(self) -> dict[str, int]:
        """Adapter parameters: total, active (active experts + their router columns), active_experts (expert
        weights only, what DynamicMoE's parameter matching equalises), per_sample (the expert weights one input
        runs through: top-k of the active experts, all of them under dense gating), frozen, trainable_experts,
        routers."""
        total = active = active_experts = per_sample = frozen = routers = 0
        for layer in self._layers:
            per_expert = layer.expert_numel()
            n_active = int(layer.active.sum())
            n_frozen = int((layer.frozen & layer.active).sum())
            router_cols = sum(t[0, :, 0].numel() for t in layer.router_tensors())  # one router, one column
            total += per_expert * layer.num_experts + sum(t.numel() for t in layer.router_tensors())
            active += (per_expert + router_cols) * n_active
            active_experts += per_expert * n_active
            per_sample += per_expert * (n_active if layer.gating == "dense" else min(layer.top_k, n_active))
            frozen += per_expert * n_frozen
            routers += sum(t.numel() for t in layer.router_tensors())
        return {"total": total, "active": active, "active_experts": active_experts, "per_sample": per_sample,
                "frozen": frozen,
                "trainable_experts": active_experts - frozen, "routers": routers}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapter weights, routers and masks only (never the frozen backbone), keyed `tower.block.param`."""
        return {f"{layer.name}.{k}": v.detach().clone() for layer in self._layers for k, v in layer.state_dict().items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.adapter_state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
            raise MtilError(f"checkpoint does not match this model's adapters (missing {missing}, unexpected {extra}); "
                            "was it written with another moe/model config?")
        for layer in self._layers:
            prefix = f"{layer.name}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            for k, v in sub.items():
                if layer.state_dict()[k].shape != v.shape:
                    raise MtilError(f"checkpoint tensor {prefix}{k} has shape {tuple(v.shape)}, model has "
                                    f"{tuple(layer.state_dict()[k].shape)}; was it written with another moe config?")
            layer.load_state_dict(sub)


def attach(clip: nn.Module, *, towers=("image", "text"), blocks=None, num_experts: int = 22, top_k: int = 2,
           hidden: int | Callable[[int], int] = 64, num_routers: int = 1, gating: str = "topk",
           noisy_gating: bool = True, dropout: float = 0.1, scale: float = 0.1, adapter_input: str = "residual",
           expert_init: str = "lora") -> AdaptedCLIP:
    """Put an MoE adapter beside the MLP of the chosen blocks of the chosen towers.

    `hidden` is the expert width, or a function of the tower's model width (grow's parameter matching)."""
    if adapter_input not in INPUTS:
        raise MtilError(f"moe.adapter_input must be {' or '.join(INPUTS)}, got {adapter_input!r}")
    available = backbone.towers(clip)
    routing = Routing()
    layers = []
    for tower in towers:
        if tower not in TOWERS:
            raise MtilError(f"unknown tower '{tower}' in moe.towers; valid towers: {', '.join(TOWERS)}")
        if tower not in available:
            raise MtilError(f"this model has no {tower} transformer to adapt; valid towers here: {', '.join(available)}")
        transformer = available[tower]
        n_blocks = len(transformer.resblocks)
        start, stop = (0, n_blocks) if blocks is None else (int(blocks[0]), int(blocks[1]))
        if not 0 <= start < stop <= n_blocks:
            raise MtilError(f"moe.blocks [{start}, {stop}) is outside the {tower} tower's {n_blocks} blocks")
        for b in range(start, stop):
            block = transformer.resblocks[b]
            if hasattr(block, "moe"):
                raise MtilError("this model already carries MoE adapters; attach them once")
            dim = block.ln_2.normalized_shape[0]
            width = hidden(dim) if callable(hidden) else hidden
            adapter = MoEAdapter(dim, num_experts, width, top_k, num_routers, gating, noisy_gating, dropout, scale,
                                 routing, batch_first=getattr(transformer, "batch_first", True), tower=tower, block=b,
                                 init=expert_init)
            adapter.to(next(clip.parameters()).device)
            block.moe = adapter
            hook = _AdapterHook(adapter, adapter_input)
            if adapter_input == "residual":
                block.ln_2.register_forward_pre_hook(hook.keep_residual)
            block.mlp.register_forward_hook(hook)
            layers.append(adapter)
    routing.layers = layers
    return AdaptedCLIP(clip, layers, routing).train(False)
