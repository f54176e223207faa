"""The `finetune` section: the field's expensive baseline against the MoE method, on one backbone.

Variants (each a whole training step as the Trainer runs it, `precision` autocast): `moe` (the adapters'
`SlotAdamW` step under the `SliceGuard`, frozen backbone), `finetune` (the `finetune` method: every parameter but
the logit scale, torch's AdamW) and `finetune_checkpointing` (the same with open_clip's gradient checkpointing of
both towers, `method.finetune.grad_checkpointing`). Memory is each variant's whole footprint, measured alone: its
copy of the model, gradients, optimizer state and activations of two steps (CUDA: allocator peak above what was
allocated before it; CPU: the sampled resident set). Step times are interleaved medians, as every section's.
"""
from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace
from typing import Callable

import torch

from ..methods import MethodFacts
from ..methods.finetune import FineTune
from ..policies import TrainContext
from .memory import peak_memory
from .steps import StepFactory, autocast
from .timing import interleaved, median, ratio, spread


def finetune_step(f: StepFactory, checkpointing: bool) -> Callable[[], float]:
    """One full fine-tuning step of the `finetune` method on a copy of the bench backbone."""
    method = FineTune(MethodFacts(tasks=(), iterations=1000, batch_size=f.s.batch, label_smoothing=0.2,
                                  final_step=True, seed=f.s.seed, num_workers=0, bad_images="fail",
                                  data_root="", eval_batch_size=f.s.batch),
                      grad_checkpointing=checkpointing)
    method.attach(dataclasses.replace(f.backbone, model=copy.deepcopy(f.clip)),
                  SimpleNamespace(device=f.device, process_index=0, num_processes=1), [], fresh=True)
    opt = method.build_optimizer(1e-5, 0.0)
    module = method.module.train()
    cast = autocast(f.device, f.s.precision)
    ctx = TrainContext(0, "bench", 0, 0)

    def step() -> float:
        with cast:
            loss = method.loss(module, f.images, f.labels, f.tokens, ctx)
        value = float(loss.detach())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value
    return step


def builders(f: StepFactory) -> dict[str, Callable[[], Callable[[], float]]]:
    return {"moe": lambda: f.moe_step(f.s.experts, f.s.top_k)[0],
            "finetune": lambda: finetune_step(f, False),
            "finetune_checkpointing": lambda: finetune_step(f, True)}


def footprint(build: Callable[[], Callable[[], float]], device: torch.device) -> dict:
    """Peak memory of building a variant and running two of its steps, above what was in use before."""
    def build_and_run():
        step = build()
        step()
        step()
    return peak_memory(build_and_run, device, calls=1)


def bench_finetune(f: StepFactory) -> dict:
    s = f.s
    make = builders(f)
    memory = {name: footprint(build, f.device) for name, build in make.items()}
    steps = {name: build() for name, build in make.items()}
    times, _ = interleaved(steps, rounds=s.rounds, steps=s.steps, warmup=s.warmup, device=f.device, clock=s.clock)
    trainable = sum(p.numel() for n, p in f.clip.named_parameters() if n != "logit_scale")
    mb = {name: m["peak_delta_mb"] for name, m in memory.items()}
    return {"trainable_finetune": trainable, "memory": memory,
            **{f"{k}_s": median(v) for k, v in times.items()},
            "finetune_over_moe": ratio(times, "finetune", "moe"),
            "finetune_over_moe_iqr": spread(times, "finetune", "moe"),
            "checkpointing_over_finetune": ratio(times, "finetune_checkpointing", "finetune"),
            "memory_finetune_over_moe": mb["finetune"] / mb["moe"] if mb["moe"] > 0 else None,
            "memory_checkpointing_over_finetune": (mb["finetune_checkpointing"] / mb["finetune"]
                                                   if mb["finetune"] > 0 else None),
            "rounds": times}
