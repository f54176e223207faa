"""Policy base class, registry and the event log.

A policy is told `begin_task(t)`, `after_step(step)` and `end_task(t)` by the training loop; it reads the usage
tracker and may freeze, merge or grow experts. Whenever it changes what trains inside a task, it resets the
affected optimizer state through the `TrainContext` it is given. Every action is appended to `self.events`
(step, task, tower, block, action, experts), which is checkpointed and written to `events.jsonl`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config
from ..errors import MtilError
from ..model.moe import AdaptedCLIP
from ..model.usage import UsageTracker

POLICIES: dict[str, type["Policy"]] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        POLICIES[name] = cls
        return cls
    return deco


@dataclass
class TrainContext:
    """What a policy may touch during training."""
    task: int                 # index in the task order
    task_name: str
    step: int                 # optimizer steps finished in this task
    global_step: int          # optimizer steps finished in the run
    optimizer: torch.optim.Optimizer | None = None


class Policy:
    """Does nothing: plain MoE adapters trained across tasks (continual fine-tuning of adapters)."""
    name = "base"

    def __init__(self, cfg: Config, model: AdaptedCLIP, tracker: UsageTracker):
        self.cfg = cfg                  # the whole run config; each policy reads its own section
        self.model = model
        self.tracker = tracker
        self.events: list[dict[str, Any]] = []

    @staticmethod
    def moe_overrides(cfg: Config) -> dict:
        """Changes to the adapter construction arguments this policy needs (e.g. grow's expert width)."""
        return {}

    def setup(self) -> None:
        """Called once on the fresh model, before the first task (not on resume)."""

    def begin_task(self, ctx: TrainContext) -> None:
        pass

    def after_step(self, ctx: TrainContext) -> None:
        pass

    def end_task(self, ctx: TrainContext) -> None:
        pass

    def router_of(self, ctx: TrainContext) -> int:
        """The router the current task trains (its own with per-task routers, else the shared one)."""
        return ctx.task if self.cfg.moe.router == "per_task" else 0

    def log(self, ctx: TrainContext, action: str, layer, experts: list[int], **extra) -> None:
        self.events.append({"step": ctx.global_step, "task": ctx.task, "task_name": ctx.task_name,
                            "tower": None if layer is None else layer.tower,
                            "block": None if layer is None else layer.block,
                            "action": action, "experts": [int(e) for e in experts], **extra})

    def state_dict(self) -> dict:
        return {"events": list(self.events)}

    def load_state_dict(self, state: dict) -> None:
        self.events = list(state["events"])


def build(cfg: Config, model: AdaptedCLIP, tracker: UsageTracker) -> Policy:
    name = cfg.policy.name
    if name not in POLICIES:
        raise MtilError(f"unknown policy '{name}'; registered policies: {', '.join(sorted(POLICIES))}")
    return POLICIES[name](cfg, model, tracker)


def moe_overrides(cfg: Config) -> dict:
    name = cfg.policy.name
    if name not in POLICIES:
        raise MtilError(f"unknown policy '{name}'; registered policies: {', '.join(sorted(POLICIES))}")
    return POLICIES[name].moe_overrides(cfg)
