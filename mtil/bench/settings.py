"""What a benchmark run measures and at which size: `Settings`, the section names and the model aliases."""
from __future__ import annotations

from dataclasses import dataclass, field

MODEL_ALIASES = {"tiny": "mtil-tiny", "mid": "mtil-mid", "vit-b-16": "ViT-B-16", "vit-b/16": "ViT-B-16"}
SECTIONS = ("train", "dispatch", "eval", "memory", "scaling", "optimizer", "finetune")


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
    optimizer_model: str = "ViT-B-16"   # the adapter parameter set of the optimizer section (config only, no backbone)
    optimizer_config: str | None = "mtil_order1"   # its experts, width, top-k, routers (None: the settings')
    seed: int = 0
    extra: dict = field(default_factory=dict)


def resolve_model(name: str) -> str:
    return MODEL_ALIASES.get(name.lower(), name)


def scaled_hidden(width: int) -> int:
    return max(8, int(round(width / 12 / 8)) * 8)
