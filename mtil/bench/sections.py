"""The timed sections on the training side: `train` (MoE / dense / plain step / frozen forward), `memory`,
`dispatch` (vectorized vs the per-expert loop, one layer) and `scaling` (vs experts and top-k)."""
from __future__ import annotations

from typing import Callable

import torch

from ..model import moe
from .dispatch import reference_dispatch
from .memory import peak_memory
from .steps import StepFactory, autocast
from .timing import interleaved, median, ratio, spread


def bench_train(f: StepFactory) -> tuple[dict, dict]:
    s = f.s
    moe_step, _ = f.moe_step(s.experts, s.top_k)
    dense_step, _ = f.moe_step(1, 1)
    variants = {"moe": moe_step, "dense": dense_step, "plain": f.plain_step(), "frozen_forward": f.frozen_forward()}
    times, wall = interleaved(variants, rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=f.device,
                              clock=s.clock)
    out = {f"{k}_s": median(v) for k, v in times.items()}
    out.update({f"{k}_wall_s": median(v) for k, v in wall.items()})
    out.update(moe_over_dense_iqr=spread(times, "moe", "dense"), moe_over_frozen_iqr=spread(times, "moe", "frozen_forward"))
    out.update(moe_over_dense=ratio(times, "moe", "dense"), moe_over_plain=ratio(times, "moe", "plain"),
               dense_over_plain=ratio(times, "dense", "plain"), moe_over_frozen=ratio(times, "moe", "frozen_forward"),
               dense_over_frozen=ratio(times, "dense", "frozen_forward"), rounds=times)
    return out, variants


def bench_memory(f: StepFactory, variants: dict) -> dict:
    out = {}
    for name, fn in variants.items():
        out[name] = peak_memory(fn, f.device)
    return out


def bench_dispatch(f: StepFactory) -> dict:
    """One image-tower layer: vectorized dispatch vs the per-expert loop, eval forward and train fwd+bwd."""
    s = f.s
    n = s.dispatch_batch or s.batch
    length = f.token_count["image"]
    torch.manual_seed(s.seed)
    layer = moe.MoEAdapter(f.width, s.experts, f.hidden, s.top_k, 1, "topk", True, 0.1, 0.1, moe.Routing()).to(f.device)
    with torch.no_grad():
        layer.w_up.normal_(0, 0.02)
        layer.router.normal_(0, 1.0)
    x = torch.randn(n, length, f.width, device=f.device)
    layer.eval()
    with torch.no_grad():
        idx, weights, _ = layer.gates(x[:, 0], torch.zeros(n, dtype=torch.long, device=f.device))
    weights = weights.requires_grad_(True)  # the gate weights receive a gradient in training, as the router does
    cast = autocast(f.device, s.precision)

    def forward(fn):
        @torch.no_grad()
        def call():
            with cast:
                fn(layer, x, idx, weights)
        return call

    xg = x.clone().requires_grad_(True)

    def train(fn):
        def call():
            with cast:
                out = fn(layer, xg, idx, weights)
            out.float().square().mean().backward()
            layer.zero_grad(set_to_none=True)
            xg.grad = weights.grad = None
        return call

    vectorized = moe.MoEAdapter.dispatch
    with torch.no_grad():
        diff = float((vectorized(layer, x, idx, weights) - reference_dispatch(layer, x, idx, weights)).abs().max())
    times_fwd, _ = interleaved({"vectorized": forward(vectorized), "loop": forward(reference_dispatch)},
                               rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=f.device, clock=s.clock)
    layer.train()
    layer.dropout.p = 0.0  # same work for both, and comparable outputs
    times_train, _ = interleaved({"vectorized": train(vectorized), "loop": train(reference_dispatch)},
                                 rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=f.device, clock=s.clock)
    return {"samples": n, "tokens": length, "dim": f.width, "hidden": f.hidden, "experts": s.experts,
            "top_k": s.top_k, "experts_used": int(idx.unique().numel()), "max_abs_diff": diff,
            "vectorized_forward_s": median(times_fwd["vectorized"]), "loop_forward_s": median(times_fwd["loop"]),
            "speedup_forward": ratio(times_fwd, "loop", "vectorized"),
            "speedup_forward_iqr": spread(times_fwd, "loop", "vectorized"),
            "speedup_train_iqr": spread(times_train, "loop", "vectorized"),
            "vectorized_train_s": median(times_train["vectorized"]), "loop_train_s": median(times_train["loop"]),
            "speedup_train": ratio(times_train, "loop", "vectorized")}


def bench_scaling(f: StepFactory, base_step: Callable | None) -> dict:
    """Step time and memory vs experts (at top_k) and vs top-k (at `experts`); interleaved in one group each."""
    s = f.s
    out = {}
    for axis, grid in (("experts", s.expert_grid), ("top_k", s.topk_grid)):
        steps = {}
        for value in grid:
            experts, k = (value, min(s.top_k, value)) if axis == "experts" else (s.experts, value)
            if k > experts:
                continue
            if experts == s.experts and k == s.top_k and base_step is not None:
                steps[value] = base_step
            else:
                steps[value], _ = f.moe_step(experts, k)
        times, _ = interleaved({str(k): v for k, v in steps.items()}, rounds=s.rounds, steps=s.steps,
                               warmup=s.warmup, device=f.device, clock=s.clock)
        ref = str(s.experts if axis == "experts" else s.top_k)
        rows = []
        for value, fn in steps.items():
            rows.append({axis: value, "step_s": median(times[str(value)]),
                         "over_reference": ratio(times, str(value), ref) if ref in times else None,
                         **{k: v for k, v in peak_memory(fn, f.device).items() if k == "peak_delta_mb"}})
        out[axis] = rows
    return out
