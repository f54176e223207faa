"""Policy base class, registry, the run facts a policy may know, and the event log.

A policy is a plain object built from its own typed settings (`build(cfg)` is the only place that reads the
config). Its life: `adapter_overrides()` says what adapters it needs (before they exist), `attach(model, tracker,
fresh)` hands it the adapted model (`fresh`: a new run, not a resume, so it may initialise masks), then the training
loop calls `begin_task` / `after_step` / `end_task` with a `TrainContext`. A policy that changes what a slot holds
announces it with `ctx.slot_changed(...)`; keeping the optimizer in step is the training loop's job. Every action
is appended to `self.events` (step, task, tower, block, action, experts), checkpointed and written to events.jsonl.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..model.moe import AdaptedCLIP, MoEAdapter
from ..model.usage import UsageTracker
from ..registry import Registry

POLICIES = Registry("policy")


register = POLICIES.named   # class decorator: the policy is `policy.name: <name>` in configs


@dataclass(frozen=True)
class RunFacts:
    """What every policy may know about the run besides its own settings."""
    tasks: int                # tasks in the order
    iterations: int           # optimizer steps per task
    top_k: int                # moe.top_k
    hidden: int               # moe.hidden
    per_task_router: bool     # moe.router == per_task
    seed: int = 0             # the run's seed (a policy's own random draws)

    @classmethod
    def from_config(cls, cfg) -> "RunFacts":
        return cls(len(cfg.data.order), cfg.train.iterations, cfg.moe.top_k, cfg.moe.hidden,
                   cfg.moe.router == "per_task", cfg.seed)


@dataclass
class TrainContext:
    """What a policy is told during training, and how it reports a changed slot."""
    task: int                 # index in the task order
    task_name: str
    step: int                 # optimizer steps finished in this task
    global_step: int          # optimizer steps finished in the run
    on_slot_change: Callable[[MoEAdapter, int, bool], None] | None = None   # set by the training loop
    loss: float | None = None  # training loss of the step just taken (set by the training loop)

    def slot_changed(self, layer: MoEAdapter, expert: int, router_column: bool = False) -> None:
        """Expert `expert` of `layer` (and its router columns) now holds new values: its optimizer state restarts."""
        if self.on_slot_change is not None:
            self.on_slot_change(layer, expert, router_column)


class Policy:
    """Does nothing: plain MoE adapters trained across tasks (continual fine-tuning of adapters)."""
    name = "base"

    def __init__(self, run: RunFacts):
        self.run = run
        self.model: AdaptedCLIP | None = None
        self.tracker: UsageTracker | None = None
        self.events: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, run: RunFacts, section) -> "Policy":
        """The policy from its run facts and the config's `policy:` section (each policy reads its own part)."""
        return cls(run)

    def adapter_overrides(self) -> dict:
        """Changes to the adapter construction arguments this policy needs (e.g. grow's expert width)."""
        return {}

    def attach(self, model: AdaptedCLIP, tracker: UsageTracker, fresh: bool = True) -> "Policy":
        """Hand the policy the adapted model; `fresh` (not a resume): it may set up the adapters' masks."""
        self.model, self.tracker = model, tracker
        return self

    def begin_task(self, ctx: TrainContext) -> None:
        pass

    def after_step(self, ctx: TrainContext) -> None:
        pass

    def end_task(self, ctx: TrainContext) -> None:
        pass

    def router_of(self, ctx: TrainContext) -> int:
        """The router the current task trains (its own with per-task routers, else the shared one)."""
        return ctx.task if self.run.per_task_router else 0

    def log(self, ctx: TrainContext, action: str, layer, experts: list[int], **extra) -> None:
        self.events.append({"step": ctx.global_step, "task": ctx.task, "task_name": ctx.task_name,
                            "tower": None if layer is None else layer.tower,
                            "block": None if layer is None else layer.block,
                            "action": action, "experts": [int(e) for e in experts], **extra})

    def state_dict(self) -> dict:
        return {"events": list(self.events)}

    def load_state_dict(self, state: dict) -> None:
        self.events = list(state["events"])


def build(cfg) -> Policy:
    """The configured policy (`policy.name`), not yet attached to a model."""
    return POLICIES.get(cfg.policy.name).obj.from_config(RunFacts.from_config(cfg), cfg.policy)
