"""Interleaved timing: the variants of a comparison take turns every round; medians, per-round ratios, their IQR."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
import torch

from ..errors import MtilError


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_clock(device: torch.device, clock: str) -> str:
    """`auto`: process CPU time on a CPU device (robust when other jobs share the cores: waiting for a core is
    not counted), wall time on CUDA (the host mostly waits for the GPU there)."""
    if clock not in ("auto", "cpu", "wall"):
        raise MtilError(f"bench clock must be auto, cpu or wall, got {clock!r}")
    return ("cpu" if device.type == "cpu" else "wall") if clock == "auto" else clock


def _time_call(fn: Callable[[], object], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, averaged over `steps` calls."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def interleaved(variants: dict[str, Callable[[], object]], *, rounds: int, steps: int, warmup: int,
                device: torch.device, clock: str = "auto") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call of each variant, one figure per round, in `clock` (see `resolve_clock`) and in wall time;
    the variants take turns within every round, in alternating order."""
    clock = resolve_clock(device, clock)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in variants}
    wall = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # no variant always runs first
        for name in order:
            w, c = _time_call(variants[name], steps, device)
            times[name].append(c if clock == "cpu" else w)
            wall[name].append(w)
    return times, wall


def median(values) -> float:
    return float(statistics.median(values))


def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of num/den (time ratio: > 1 means `num` is slower)."""
    return median([a / b for a, b in zip(times[num], times[den])])


def spread(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """Interquartile range [q25, q75] of the per-round ratios num/den: how far one ratio can be trusted."""
    values = np.array([a / b for a, b in zip(times[num], times[den])])
    return [float(np.quantile(values, 0.25)), float(np.quantile(values, 0.75))]
