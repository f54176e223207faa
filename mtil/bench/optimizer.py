"""The `optimizer` section: one step of the adapters' `SlotAdamW` (with the `SliceGuard`'s per-step slot masks, as
the Trainer runs it) against torch's own AdamW (`foreach=True`; on CUDA also `fused=True`) over the same adapter
parameter set: every block of both towers of `optimizer_model` (default ViT-B-16, whatever `--model` is; built from
its open_clip config, no backbone), `experts` experts of width `hidden`, `routers` per-task routers with noise
weights. The routing of a batch (`batch` samples, top-k, random routers) decides which experts step."""
from __future__ import annotations

from types import SimpleNamespace

import open_clip
import torch

from ..engine import optimizer as optim
from ..engine.slice_guard import SliceGuard
from ..errors import MtilError
from ..model import backbone, moe
from .settings import resolve_model, scaled_hidden
from .timing import interleaved, median, ratio, spread


def tower_widths(model: str) -> list[int]:
    """The width of every residual block of both towers of an open_clip model config."""
    backbone.register_models()
    cfg = open_clip.get_model_config(resolve_model(model))
    if cfg is None:
        raise MtilError(f"bench: no open_clip config named {model!r} for the optimizer section")
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    return [vision["width"]] * vision["layers"] + [text.get("width", 512)] * text.get("layers", 12)


def adapter_layers(widths: list[int], experts: int, hidden: int | None, top_k: int, routers: int, batch: int,
                   seed: int, device: torch.device) -> list[moe.MoEAdapter]:
    """One MoEAdapter per block with random weights, gradients and one batch's routing (`step_selected`)."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for d in widths:
        layer = moe.MoEAdapter(d, experts, hidden or scaled_hidden(d), top_k, routers, "topk", True, 0.0, 0.1,
                               moe.Routing()).to(device)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(device)
            logits = torch.randn(batch, experts, generator=g)
            layer.step_selected[logits.topk(top_k, dim=1).indices.unique().to(device)] = True
        layers.append(layer)
    return layers


def bench_optimizer(s, device: torch.device) -> dict:
    widths = tower_widths(s.optimizer_model)
    make = lambda: adapter_layers(widths, s.experts, s.hidden, s.top_k, s.routers, s.batch, s.seed, device)  # noqa: E731
    slot_layers = make()
    model = SimpleNamespace(layers=slot_layers)
    selected = [layer.step_selected.clone() for layer in slot_layers]
    slot = optim.build_optimizer(model, 1e-4, 0.0)
    SliceGuard(model, slot, router=0)   # (it clears the record: each step restores it)

    def slot_step():
        for layer, sel in zip(slot_layers, selected):   # the guard clears the record after each step
            layer.step_selected.copy_(sel)
        slot.step()

    variants = {"slot": slot_step}
    torch_layers = make()
    params = [p for layer in torch_layers for p in layer.parameters()]
    variants["torch_foreach"] = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=True).step
    if device.type == "cuda":
        fused_params = [p for layer in make() for p in layer.parameters()]
        variants["torch_fused"] = torch.optim.AdamW(fused_params, lr=1e-4, weight_decay=0.0, fused=True).step
    times, _ = interleaved(variants, rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=device, clock=s.clock)
    out = {"model": resolve_model(s.optimizer_model), "tensors": len(params), "values": sum(p.numel() for p in params),
           "experts_stepped": sum(int(x.sum()) for x in selected), "expert_slots": sum(x.numel() for x in selected),
           **{f"{k}_s": median(v) for k, v in times.items()},
           "slot_over_torch": ratio(times, "slot", "torch_foreach"),
           "slot_over_torch_iqr": spread(times, "slot", "torch_foreach")}
    if "torch_fused" in times:
        out["slot_over_fused"] = ratio(times, "slot", "torch_fused")
    return out
