"""A whole benchmark run: the device, the selected sections in order, the machine it ran on (`run`); and
torch.profiler's op table of one variant's training step (`profile_step`)."""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict

import torch

from ..errors import MtilError
from .evaluation import bench_eval
from .finetune import bench_finetune
from .optimizer import bench_optimizer
from .projections import check_targets, projection
from .sections import bench_dispatch, bench_memory, bench_scaling, bench_train
from .settings import SECTIONS, Settings, resolve_model
from .steps import StepFactory
from .timing import resolve_clock

log = logging.getLogger(__name__)


def machine_info(device: torch.device) -> dict:
    info = {"node": platform.node(), "machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(settings: Settings | None = None, **overrides) -> dict:
    """Run the selected benchmark sections; returns a JSON-able dict (times in seconds, memory in MiB)."""
    s = settings or Settings()
    if overrides:
        s = Settings(**{**asdict(s), **overrides})
    unknown = set(s.sections) - set(SECTIONS)
    if unknown:
        raise MtilError(f"unknown bench section(s) {', '.join(sorted(unknown))}; valid: {', '.join(SECTIONS)}")
    if s.threads:
        torch.set_num_threads(int(s.threads))
    if s.device:
        device = torch.device(s.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise MtilError("bench --device cuda: no CUDA device is available; leave --device out to use the CPU")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s.precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast on CPU is often slower than fp32; the ratios still compare like with like")
    started = time.perf_counter()
    f = StepFactory(s, device)
    result = {"settings": {**asdict(s), "model": resolve_model(s.model), "hidden": f.hidden,
                           "sections": list(s.sections), "clock": resolve_clock(device, s.clock)},
              "machine": machine_info(device), "tokens": f.token_count}
    variants = None
    if "train" in s.sections or "memory" in s.sections:
        log.info("bench %s: training step (moe / dense / plain / frozen forward)", result["settings"]["model"])
        train, variants = bench_train(f)
        if "train" in s.sections:
            result["train"] = train
    if "memory" in s.sections:
        log.info("bench: peak memory of a training step")
        result["memory"] = bench_memory(f, variants)
    if "dispatch" in s.sections:
        log.info("bench: vectorized dispatch vs per-expert loop")
        result["dispatch"] = bench_dispatch(f)
    if "eval" in s.sections:
        log.info("bench: evaluation row vs bare image tower")
        result["eval"] = bench_eval(f)
    if "scaling" in s.sections:
        log.info("bench: scaling with experts and top-k")
        result["scaling"] = bench_scaling(f, variants["moe"] if variants else None)
    del variants
    if "finetune" in s.sections:
        log.info("bench: full fine-tuning (the baselines' step) vs the MoE method: step time and memory footprint")
        result["finetune"] = bench_finetune(f)
    if "optimizer" in s.sections:
        log.info("bench: SlotAdamW step vs torch's AdamW on the %s adapter parameter set", s.optimizer_model)
        result["optimizer"] = bench_optimizer(s, device)
    if device.type == "cuda" and result["settings"]["model"] == "ViT-B-16":
        result["projection"] = projection(result)
    result["targets"] = check_targets(result)
    result["wall_s"] = time.perf_counter() - started
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def profile_step(settings: Settings | None = None, steps: int = 3, what: str = "moe", row_limit: int = 25) -> str:
    """torch.profiler table (self CPU/CUDA time per op) of `steps` training steps of variant `what`
    (`moe`, `dense`, `plain`); for finding where a missed target's time goes."""
    s = settings or Settings()
    device = torch.device(s.device) if s.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s.threads:
        torch.set_num_threads(int(s.threads))
    f = StepFactory(s, device)
    fn = {"moe": lambda: f.moe_step(s.experts, s.top_k)[0], "dense": lambda: f.moe_step(1, 1)[0],
          "plain": f.plain_step}[what]()
    for _ in range(s.warmup):
        fn()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=row_limit)
