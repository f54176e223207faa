"""Speed and memory of the MoE adapters, measured as ratios within one process.

Every figure is a median over interleaved rounds (variant A, variant B, ..., then again), and every ratio is the
median of the per-round ratios, so a machine that is busy with other work slows the variants of a round alike
and the ratio stays meaningful where a raw time does not. On a CPU device the clock is the process's CPU time
(time spent waiting for a core shared with other jobs is not counted); on CUDA it is wall time. What is measured (see `benchmarks/README.md`):

1. `train`: one training step (forward + backward + AdamW step with the `SliceGuard`, frozen backbone, both
   towers adapted, CLIP logits against `classes` prompts, label-smoothed cross-entropy) with MoE adapters
   (`experts`, `top_k`, `hidden`) vs the same step with one dense adapter per block (1 expert, top-1, same
   hidden, through the same `MoEAdapter` code), vs a plain bottleneck adapter (no router, no gather), vs the
   frozen backbone's forward alone (no adapters, no grad).
2. `dispatch`: `MoEAdapter.dispatch` (vectorized) vs `reference_dispatch` below, the per-expert loop a user
   would write, on one layer at the model's width and token count; forward (eval) and forward + backward.
3. `eval`: images per second of `Evaluator.row` (selector, per-sample routing, cached frozen features and
   pixels, text features per router) after a warm-up row vs the bare frozen image tower on the same pixels.
4. `memory`: peak memory of one training step above what is resident before it (CUDA: allocator peak; CPU: the
   process's resident set, sampled by a thread while the step runs, after returning freed heap to the system).
5. `scaling`: step time and memory vs the number of experts and vs top-k.

With CUDA and ViT-B-16, `projection` extrapolates the wall time of MTIL Order I from the measured step time
and evaluation throughput. Library code: it logs and returns a dict; `mtil bench` prints it.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import logging
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine import optimizer as optim
from .errors import MtilError
from .model import backbone, moe

log = logging.getLogger(__name__)

MODEL_ALIASES = {"tiny": "mtil-tiny", "mid": "mtil-mid", "vit-b-16": "ViT-B-16", "vit-b/16": "ViT-B-16"}
SECTIONS = ("train", "dispatch", "eval", "memory", "scaling")
# Targets: (result path, comparison, bound). `train.moe_over_dense` is a slowdown (lower is better).
TARGETS = {"train.moe_over_dense": ("<=", 1.15), "dispatch.speedup_train": (">=", 3.0),
           "dispatch.speedup_forward": (">=", 3.0), "eval.eval_over_bare": (">=", 0.85)}
# MTIL Order I: test images per dataset (the splits the MTIL papers evaluate on), for the wall-time projection
# only. Approximate: a prepared dataset may differ by a few images.
ORDER1_TEST_IMAGES = {"Aircraft": 3333, "Caltech101": 6085, "CIFAR100": 10000, "DTD": 1880, "EuroSAT": 5400,
                      "Flowers102": 6149, "Food101": 25250, "MNIST": 10000, "OxfordPet": 3669,
                      "StanfordCars": 8041, "SUN397": 19850}
ORDER1_ITERATIONS = 1000


@dataclass
class Settings:
    """What to measure and at which size. `hidden=None` scales the reference h=64 of ViT-B/16 (width 768) to the
    model's width (d / 12, rounded to a multiple of 8, at least 8)."""
    model: str = "mtil-tiny"
    batch: int = 64
    classes: int = 100              # prompts per training step (a typical MTIL task has ~100 classes)
    experts: int = 22
    top_k: int = 2
    hidden: int | None = None
    routers: int = 11               # per-task routers, as in an 11-task MTIL run
    rounds: int = 7                 # interleaved timing rounds (medians over these)
    steps: int = 2                  # timed calls per variant per round
    warmup: int = 2                 # untimed calls per variant before the first round
    precision: str = "fp32"         # fp32 | bf16 (autocast)
    clock: str = "auto"             # auto (CPU: process CPU time, CUDA: wall) | cpu | wall
    device: str | None = None       # None: cuda when available, else cpu
    threads: int | None = None      # torch intra-op threads (None: leave torch's setting)
    sections: tuple = SECTIONS
    expert_grid: tuple = (4, 8, 22, 44)
    topk_grid: tuple = (1, 2, 4)
    dispatch_batch: int | None = None   # samples in the dispatch micro-benchmark (None: batch)
    eval_tasks: int = 4
    eval_classes: int = 11          # 11 x 2 prompts per 256 test images: MTIL Order I's proportion of prompts
    eval_templates: int = 2         # to test images (8648 class x template prompts / 99657 images = 0.087)
    eval_test: int = 256            # test images per task
    eval_train: int = 64            # training images per task (selector fit)
    eval_batch: int = 128
    eval_rounds: int | None = 5     # None: rounds (an evaluation round is long: fewer of them)
    seed: int = 0
    extra: dict = field(default_factory=dict)


# ---- the reference the vectorized dispatch is compared with ----------------------------------------------------

def reference_dispatch(layer: moe.MoEAdapter, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The straightforward mixture: group the (sample, slot) pairs by expert and loop over the experts used.

    Each expert runs one dense bottleneck over the samples routed to it, and its gated output is added back at
    those samples' rows. Same result as `MoEAdapter.dispatch` (dropout aside); it is the speed baseline of the
    `dispatch` benchmark, the implementation one writes first.
    """
    out = torch.zeros_like(x)
    dtype = x.dtype
    for e in idx.unique().tolist():
        rows, slots = (idx == e).nonzero(as_tuple=True)
        hid = F.relu(x[rows] @ layer.w_down[e].to(dtype) + layer.b_down[e].to(dtype))
        hid = layer.dropout(hid)
        y = hid @ layer.w_up[e].to(dtype) + layer.b_up[e].to(dtype)
        out.index_add_(0, rows, y * weights[rows, slots].to(dtype)[:, None, None])
    return out * layer.scale


class PlainAdapter(nn.Module):
    """One dense bottleneck adapter (no router, no gather): the cheapest adapter a block can carry."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1, scale: float = 0.1):
        super().__init__()
        self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout, self.scale = nn.Dropout(dropout), scale

    def forward(self, h):
        return self.up(self.dropout(F.relu(self.down(h)))) * self.scale


def attach_plain(clip: nn.Module, hidden: int) -> nn.ModuleList:
    """A `PlainAdapter` beside the MLP of every block of both towers, reading the residual stream (the default
    placement of `moe.attach`)."""
    adapters = nn.ModuleList()
    for transformer in backbone.towers(clip).values():
        for block in transformer.resblocks:
            adapter = PlainAdapter(block.ln_2.normalized_shape[0], hidden).to(next(clip.parameters()).device)
            kept: dict = {}  # the residual stream entering ln_2, as `moe.attach` reads it by default
            block.ln_2.register_forward_pre_hook(lambda m, inputs, kept=kept: kept.__setitem__("x", inputs[0]))
            block.mlp.register_forward_hook(lambda m, inputs, output, a=adapter, kept=kept: output + a(kept.pop("x")))
            adapters.append(adapter)
    return adapters


# ---- measuring ---------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise MtilError(f"bench precision must be fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


def _clock(device: torch.device, clock: str) -> str:
    """`auto`: process CPU time on a CPU device (robust when other jobs share the cores: waiting for a core is
    not counted), wall time on CUDA (the host mostly waits for the GPU there)."""
    if clock not in ("auto", "cpu", "wall"):
        raise MtilError(f"bench clock must be auto, cpu or wall, got {clock!r}")
    return ("cpu" if device.type == "cpu" else "wall") if clock == "auto" else clock


def _time_call(fn: Callable[[], object], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, averaged over `steps` calls."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def interleaved(variants: dict[str, Callable[[], object]], *, rounds: int, steps: int, warmup: int,
                device: torch.device, clock: str = "auto") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call of each variant, one figure per round, in `clock` (see `_clock`) and in wall time; the
    variants take turns within every round, in alternating order."""
    clock = _clock(device, clock)
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


class _RSSPeak:
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
    with _RSSPeak() as m:
        for _ in range(calls):
            fn()
    return {"peak_delta_mb": m.delta / 2 ** 20, "peak_mb": m.peak / 2 ** 20, "how": "cpu rss, sampled"}


# ---- models and steps ---------------------------------------------------------------------------------------------

def resolve_model(name: str) -> str:
    return MODEL_ALIASES.get(name.lower(), name)


def scaled_hidden(width: int) -> int:
    return max(8, int(round(width / 12 / 8)) * 8)


def _width(clip: nn.Module) -> int:
    return next(iter(backbone.towers(clip).values())).resblocks[0].ln_2.normalized_shape[0]


def _image_size(clip: nn.Module) -> tuple[int, int]:
    size = clip.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def _randomize(adapted: moe.AdaptedCLIP, seed: int) -> None:
    """Trained-looking adapters: non-zero up-projections and routers that spread samples over the experts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.layers:
            for p in (layer.w_up, layer.b_up):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            layer.router.copy_(torch.randn(layer.router.shape, generator=g))


class StepFactory:
    """Builds the step closures of one backbone: MoE / dense / plain adapters, frozen forward."""

    def __init__(self, s: Settings, device: torch.device):
        self.s, self.device = s, device
        torch.manual_seed(s.seed)
        self.backbone = backbone.load(resolve_model(s.model), None, device=device)
        self.clip = self.backbone.model
        self.width = _width(self.clip)
        self.hidden = s.hidden or scaled_hidden(self.width)
        h, w = _image_size(self.clip)
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
        _randomize(model, self.s.seed)
        return model

    def train_step(self, model: nn.Module, params: list, route: int | None = 0) -> Callable[[], float]:
        """forward + backward + AdamW step (+ SliceGuard for MoE models), as `train.fit_task` runs it."""
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        if isinstance(model, moe.AdaptedCLIP):
            optim.SliceGuard(model, opt, route)
            model.routing.tracking = True
        model.train()
        autocast = _autocast(self.device, self.s.precision)
        images, tokens, labels = self.images, self.tokens, self.labels

        def step() -> float:
            with autocast:
                logits = model(images, tokens, route) if isinstance(model, moe.AdaptedCLIP) else _clip_logits(model, images, tokens)
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
        autocast = _autocast(self.device, self.s.precision)

        @torch.no_grad()
        def forward():
            with autocast:
                _clip_logits(clip, self.images, self.tokens)
        return forward


def _clip_logits(clip, images, tokens):
    img = clip.encode_image(images, normalize=True)
    txt = clip.encode_text(tokens, normalize=True)
    return clip.logit_scale.exp() * img @ txt.t()


# ---- sections -------------------------------------------------------------------------------------------------------

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
    autocast = _autocast(f.device, s.precision)

    def forward(fn):
        @torch.no_grad()
        def call():
            with autocast:
                fn(layer, x, idx, weights)
        return call

    xg = x.clone().requires_grad_(True)

    def train(fn):
        def call():
            with autocast:
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


# ---- evaluation ------------------------------------------------------------------------------------------------------

def synthetic_tasks(n_tasks: int, classes: int, templates: int, n_train: int, n_test: int, size: tuple[int, int],
                    seed: int) -> list:
    """In-memory tasks in the prepared format (PNG bytes, undecoded): task t's images carry its own tint, so the
    selector tells the tasks apart as it does real domains."""
    import datasets
    from PIL import Image

    from .data.pipeline import TaskData

    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        tint = rng.integers(0, 256, size=3)
        names = [f"task {t} class {c}" for c in range(classes)]
        features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=names)})
        splits = {}
        for split, n in (("train", n_train), ("test", n_test)):
            images, labels = [], []
            for i in range(n):
                pixels = (rng.integers(0, 90, size=(size[0], size[1], 3)) + tint * 0.6).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="PNG")
                images.append({"bytes": buf.getvalue(), "path": None})
                labels.append(i % classes)
            splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        tmpl = [f"template {i} of a {{}}." for i in range(templates)]
        tasks.append(TaskData(f"Synthetic{t}", names, tmpl, splits["train"], splits["test"]))
    return tasks


def bench_eval(f: StepFactory) -> dict:
    from . import config
    from .engine.evaluate import Evaluator

    s = f.s
    tasks = synthetic_tasks(s.eval_tasks, s.eval_classes, s.eval_templates, s.eval_train, s.eval_test,
                            _image_size(f.clip), s.seed)
    torch.manual_seed(s.seed)
    model = moe.attach(copy.deepcopy(f.clip), num_experts=s.experts, top_k=s.top_k, hidden=f.hidden,
                       num_routers=s.eval_tasks)
    _randomize(model, s.seed)
    cfg = config.load(None, [f"eval.batch_size={s.eval_batch}", "eval.mode=selector", "eval.pixel_cache_mb=100000",
                             "selector.components=8", f"selector.max_fit_samples={s.eval_train}"])
    autocast = (lambda: _autocast(f.device, s.precision))
    ev = Evaluator(model, tasks, f.backbone.preprocess_val, f.backbone.tokenizer, eval_cfg=cfg.eval,
                   selector_cfg=cfg.selector, data_cfg=cfg.data, seed=s.seed, shared_router=False, device=f.device,
                   autocast=autocast)
    for t in range(len(tasks)):
        ev.fit_selector(t)
    first = time.perf_counter()
    warm = ev.row(len(tasks))  # fills the caches: frozen features, pixels, zero-shot text
    first = time.perf_counter() - first
    if any(ev._cache[j].pixels is None for j in range(len(tasks))):  # pragma: no cover - budget is huge
        raise MtilError("bench: the evaluator did not keep the test pixels; raise eval.pixel_cache_mb")
    routed = [float((ev.routes(j, len(tasks), ev._cache[j].features) >= 0).float().mean()) for j in range(len(tasks))]
    if np.mean(routed) < 0.5:
        log.warning("bench eval: the selector routes only %.0f%% of the test images to an adapted router (too few "
                    "training images per task?); the row is then mostly cached features and its speed says little",
                    100 * np.mean(routed))
    bare = copy.deepcopy(f.clip).eval()
    pixels = [ev._cache[j].pixels for j in range(len(tasks))]
    n_images = sum(len(p) for p in pixels)

    @torch.no_grad()
    def bare_pass():
        for px in pixels:
            for i in range(0, len(px), s.eval_batch):
                with autocast():
                    bare.encode_image(px[i:i + s.eval_batch].to(f.device, torch.float32), normalize=True)

    @torch.no_grad()
    def text_pass():
        for j in range(len(tasks)):
            ev.text_features(j, j)

    bare_pass()  # warm-up (the row was warmed up above)
    rows, _ = interleaved({"row": lambda: ev.row(len(tasks)), "bare": bare_pass, "text": text_pass},
                          rounds=s.eval_rounds or s.rounds, steps=1, warmup=0, device=f.device, clock=s.clock)
    again = ev.row(len(tasks))
    return {"tasks": len(tasks), "images_per_row": n_images, "prompts_per_row": len(tasks) * s.eval_classes * s.eval_templates,
            "routed_fraction": float(np.mean(routed)), "selector_accuracy": warm["selector_accuracy"],
            "row_images_per_s": n_images / median(rows["row"]), "bare_images_per_s": n_images / median(rows["bare"]),
            "eval_over_bare": ratio(rows, "bare", "row"), "eval_over_bare_iqr": spread(rows, "bare", "row"),
            "text_share_of_row": median([t / r for r, t in zip(rows["row"], rows["text"])]),
            "first_row_s": first, "row_s": median(rows["row"]), "bare_s": median(rows["bare"]),
            "deterministic": again["accuracies"] == warm["accuracies"]}


# ---- the whole benchmark -------------------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    info = {"node": platform.node(), "machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def projection(result: dict) -> dict | None:
    """Projected wall time of MTIL Order I (ViT-B-16): 11 tasks x 1000 steps x step time, plus evaluation."""
    train = result.get("train")
    ev = result.get("eval")
    if not train:
        return None
    names = list(ORDER1_TEST_IMAGES)
    sizes = [ORDER1_TEST_IMAGES[n] for n in names]
    train_s = len(names) * ORDER1_ITERATIONS * train["moe_s"]
    out = {"train_hours": train_s / 3600, "step_s": train["moe_s"], "tasks": len(names),
           "iterations_per_task": ORDER1_ITERATIONS}
    if ev:
        # first row: frozen features of every test set (bare speed); row i re-encodes the test sets of the i
        # learned tasks (a perfect selector routes exactly those), at the measured row speed.
        routed = sum(sum(sizes[:i + 1]) for i in range(len(names)))
        eval_s = sum(sizes) / ev["bare_images_per_s"] + routed / ev["row_images_per_s"]
        out.update(eval_hours=eval_s / 3600, total_hours=(train_s + eval_s) / 3600)
    return out


def check_targets(result: dict) -> dict:
    out = {}
    for key, (op, bound) in TARGETS.items():
        section, name = key.split(".")
        value = result.get(section, {}).get(name) if isinstance(result.get(section), dict) else None
        if value is None:
            continue
        out[key] = {"value": value, "target": f"{op} {bound}", "met": value <= bound if op == "<=" else value >= bound}
    return out


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
                           "sections": list(s.sections), "clock": _clock(device, s.clock)},
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
