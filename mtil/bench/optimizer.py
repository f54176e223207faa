"""The `optimizer` section: one step of the adapters' `SlotAdamW` (with the `SliceGuard`'s per-step slot masks, as
the Trainer runs it) against torch's own AdamW (`foreach=True`; on CUDA also `fused=True`) on the same work.

Like for like: both step the parameter set one task of `optimizer_config` (default `mtil_order1`) trains, with the
same gradients. Every block of both towers of `optimizer_model` (default ViT-B-16; its open_clip config, no
backbone) carries the config's `moe.num_experts` experts of width `moe.hidden` (both towers) and one router per task;
the trained set is every expert plus the current task's router and noise weights (the other routers are locked).
torch's AdamW is given exactly that set (the experts' stacked tensors and the current router's row as their own
Parameters); the experts no sample of the batch (`batch`, top-k over random router logits) selected get a zero
gradient in both. `optimizer_config=None` takes `experts`, `top_k`, `hidden` and `routers` from the settings instead.

Memory: the persistent optimizer memory of both (moments, step counts and, for SlotAdamW, its kept denominator
buffer) and the memory a step allocates and frees (CUDA: the allocator's peak above what was allocated before the
step; CPU: the bytes torch's profiler sees allocated inside the step). torch's foreach AdamW allocates its Adam
denominator (one tensor as large as the parameters) afresh every step; SlotAdamW keeps one. That allocation effect
(on a CPU mostly the page faults of first touching the fresh memory) is timed on its own, torch's `_foreach_sqrt`
into fresh tensors against `sqrt(out=)` into kept ones, and the ratio is also given with it taken out of torch's
time (`slot_over_torch_without_allocation`).
"""
from __future__ import annotations

from types import SimpleNamespace

import open_clip
import torch

from .. import config
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


def trained_set(s) -> dict:
    """experts, top_k, hidden (None: scaled per width) and routers of the section: `optimizer_config`'s moe section
    and task count, else the settings'."""
    if getattr(s, "optimizer_config", None) is None:
        return dict(experts=s.experts, top_k=s.top_k, hidden=s.hidden, routers=s.routers, config=None)
    cfg = config.load(s.optimizer_config, [])
    return dict(experts=cfg.moe.num_experts, top_k=cfg.moe.top_k, hidden=cfg.moe.hidden,
                routers=len(cfg.data.order) if cfg.moe.router == "per_task" else 1, config=s.optimizer_config)


def adapter_layers(widths: list[int], experts: int, hidden: int | None, top_k: int, routers: int, batch: int,
                   seed: int, device: torch.device) -> list[moe.MoEAdapter]:
    """One MoEAdapter per block with random weights and one batch's routing (`step_selected`); gradients as a
    step of task 0 leaves them: the selected experts' random, the unselected experts' and other routers' zero."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for d in widths:
        layer = moe.MoEAdapter(d, experts, hidden or scaled_hidden(d), top_k, routers, "topk", True, 0.0, 0.1,
                               moe.Routing()).to(device)
        with torch.no_grad():
            logits = torch.randn(batch, experts, generator=g)
            selected = torch.zeros(experts, dtype=torch.bool)
            selected[logits.topk(top_k, dim=1).indices.unique()] = True
            layer.step_selected.copy_(selected.to(device))
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                grad = torch.randn(p.shape, generator=g) * 1e-3
                if any(p is t for t in layer.expert_tensors()):
                    grad[~selected] = 0
                elif any(p is t for t in layer.router_tensors()):
                    grad[1:] = 0
                p.grad = grad.to(device)
        layers.append(layer)
    return layers


def torch_params(layers: list[moe.MoEAdapter]) -> list[torch.nn.Parameter]:
    """The trained set as torch's AdamW sees it: each expert tensor, and the current router's row (and its noise
    weights) as its own Parameter, with the same values and gradients."""
    params = []
    for layer in layers:
        for t in layer.expert_tensors():
            params.append(t)
        for t in layer.router_tensors():
            p = torch.nn.Parameter(t.detach()[:1].clone())
            p.grad = t.grad[:1].clone()
            params.append(p)
    return params


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Persistent optimizer memory: every tensor of its state (and SlotAdamW's kept denominator buffers)."""
    tensors = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    tensors += list(getattr(opt, "_scratch", {}).values())
    return sum(t.numel() * t.element_size() for t in tensors)


def step_allocation(step, device: torch.device) -> int:
    """Bytes one call of `step` allocates beyond what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return int(sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages()))


def bench_optimizer(s, device: torch.device) -> dict:
    widths = tower_widths(s.optimizer_model)
    sizes = trained_set(s)
    make = lambda: adapter_layers(widths, sizes["experts"], sizes["hidden"], sizes["top_k"], sizes["routers"],  # noqa: E731
                                  s.batch, s.seed, device)
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
    params = torch_params(make())
    torch_foreach = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=True)
    variants["torch_foreach"] = torch_foreach.step
    squares = [torch.rand_like(p) for p in params]
    kept = [torch.empty_like(p) for p in params]
    variants["denominator_fresh"] = lambda: torch._foreach_sqrt(squares)   # torch's: a new tensor every step
    variants["denominator_kept"] = lambda: [torch.sqrt(v, out=b) for v, b in zip(squares, kept)]   # SlotAdamW's
    if device.type == "cuda":
        variants["torch_fused"] = torch.optim.AdamW(torch_params(make()), lr=1e-4, weight_decay=0.0, fused=True).step
    times, _ = interleaved(variants, rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=device, clock=s.clock)
    trained = sum(p.numel() for p in params)
    alloc = [max(f - k, 0.0) for f, k in zip(times["denominator_fresh"], times["denominator_kept"])]
    without = {"slot": times["slot"], "torch": [t - a for t, a in zip(times["torch_foreach"], alloc)]}
    out = {"model": resolve_model(s.optimizer_model), "config": sizes["config"], "experts": sizes["experts"],
           "hidden": sizes["hidden"], "routers": sizes["routers"], "tensors": len(params), "values": trained,
           "experts_stepped": sum(int(x.sum()) for x in selected), "expert_slots": sum(x.numel() for x in selected),
           **{f"{k}_s": median(v) for k, v in times.items()},
           "slot_over_torch": ratio(times, "slot", "torch_foreach"),
           "slot_over_torch_iqr": spread(times, "slot", "torch_foreach"),
           "allocation_s": median(alloc), "torch_without_allocation_s": median(without["torch"]),
           "slot_over_torch_without_allocation": ratio(without, "slot", "torch"),
           "slot_state_mb": state_bytes(slot) / 2**20, "torch_state_mb": state_bytes(torch_foreach) / 2**20,
           "slot_step_alloc_mb": step_allocation(slot_step, device) / 2**20,
           "torch_step_alloc_mb": step_allocation(torch_foreach.step, device) / 2**20,
           "params_mb": sum(p.numel() * p.element_size() for p in params) / 2**20}
    if "torch_fused" in times:
        out["slot_over_fused"] = ratio(times, "slot", "torch_fused")
    return out
