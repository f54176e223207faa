"""Peak memory of a few calls above what is resident before them: the CUDA allocator's peak, or on a CPU the
process's resident set, sampled by a thread while the calls run."""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from typing import Callable

import torch


def _rss() -> int:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - psutil is a dev dependency; /proc works on Linux
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so an RSS baseline is not inflated by cached chunks."""
    import gc
    gc.collect(1)  # young generations only: a full collection takes ~1 s with open_clip's objects alive
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RSSPeak:
    """Peak resident set size above the level at entry, sampled by a thread every `interval` seconds."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self):
        _trim_heap()
        self.base = self.peak = _rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.peak = max(self.peak, _rss())
        self._stop.set()
        self._thread.join()

    @property
    def delta(self) -> int:
        return max(self.peak - self.base, 0)


def peak_memory(fn: Callable[[], object], device: torch.device, calls: int = 2) -> dict:
    """Peak bytes of `calls` calls of fn above the memory in use before them (call it after a warm-up)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_delta_mb": (peak - base) / 2 ** 20, "peak_mb": peak / 2 ** 20, "how": "cuda max_memory_allocated"}
    with RSSPeak() as m:
        for _ in range(calls):
            fn()
    return {"peak_delta_mb": m.delta / 2 ** 20, "peak_mb": m.peak / 2 ** 20, "how": "cpu rss, sampled"}
