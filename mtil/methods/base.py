"""Method base class, registry and the run facts a method may know.

A method says what trains, with which losses, and what happens between tasks; the MoE adapters with a lifecycle
policy (`moe`) are one method, the field's baselines (`finetune`, `lwf`, `icarl`, `wiseft`, `zscl`, `zero-shot`)
the others. `build(cfg)` is the only config reader: each method's `from_config` reads its own section
(`method.<name>`, and `method.finetune` for the methods that fine-tune the whole CLIP) once into typed arguments.

Its life, driven by the run and the `Trainer`: `attach(backbone, accelerator, tasks, fresh)` builds the model it
trains and returns the `AdaptedCLIP` the evaluator reads (a resume then loads `load_state_dict`); per task,
`build_optimizer`, `begin_task(ctx, optimizer)` (at the start of every fit, a resumed one too: `ctx.step` says
where), `loss(...)` per step, `after_step(ctx)`, `end_task(ctx)`. Events go to `self.events` (events.jsonl).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import dataset_key
from ..data.pipeline import TaskData
from ..model.moe import AdaptedCLIP
from ..policies import TrainContext
from ..registry import Registry

METHODS = Registry("method")


register = METHODS.named   # class decorator: the method is `method.name: <name>` in configs


@dataclass(frozen=True)
class MethodFacts:
    """What every method may know about the run besides its own settings."""
    tasks: tuple[str, ...]    # data.order
    iterations: int           # train.iterations
    batch_size: int           # train.batch_size
    label_smoothing: float    # train.label_smoothing
    final_step: bool          # train.final_step: the references' extra last iteration at lr 0 runs too
    seed: int
    num_workers: int          # data.num_workers
    bad_images: str           # data.bad_images
    data_root: str            # data.root
    eval_batch_size: int      # eval.batch_size

    @classmethod
    def from_config(cls, cfg) -> "MethodFacts":
        return cls(tuple(cfg.data.order), cfg.train.iterations, cfg.train.batch_size, cfg.train.label_smoothing,
                   cfg.train.final_step, cfg.seed, cfg.data.num_workers, cfg.data.bad_images, cfg.data.root,
                   cfg.eval.batch_size)


class Method(ABC):
    """The interface; the abstract methods are what every method must say."""
    name = "base"
    trains = True             # False: nothing is trained (zero-shot)

    def __init__(self, facts: MethodFacts):
        self.facts = facts
        self.model: AdaptedCLIP | None = None   # what the evaluator reads
        self.module: nn.Module | None = None    # what the training step calls (accelerate prepares it)
        self._events: list[dict[str, Any]] = []
        self.loss_terms: dict[str, torch.Tensor] = {}   # the last step's loss terms, detached (the live curves)

    @classmethod
    def from_config(cls, cfg) -> "Method":
        return cls(MethodFacts.from_config(cfg))

    # ---- set-up ---------------------------------------------------------------------------------------------
    @abstractmethod
    def attach(self, backbone, accelerator, tasks: list[TaskData], fresh: bool) -> AdaptedCLIP:
        """Build the trained model around the loaded backbone (`tasks`: the run's task data, in order); `fresh`: a
        new run, not a resume."""

    def eval_mode(self, configured: str) -> str:
        """The evaluator's mode: the configured `eval.mode` for adapters, else what the method implies."""
        return configured

    # ---- one task -------------------------------------------------------------------------------------------
    lr_table: str   # the config table of per-task learning rates the subclass's `lr_per_task` comes from
    lr: float
    lr_per_task: dict

    def lr_of(self, task: str) -> float:
        """Learning rate of task `task`."""
        return rate_of(task, self.lr, self.lr_per_task)

    def lr_key(self, task: str) -> str:
        """The config key that sets task `task`'s learning rate (named in the NaN-loss advice)."""
        return f"{self.lr_table}.{task}"

    @abstractmethod
    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """A fresh optimizer over what trains in this task."""

    @abstractmethod
    def clip_gradients(self, accelerator, max_norm: float) -> None:
        """Clip the gradient norm of what trains to `max_norm` (train.grad_clip)."""

    def begin_task(self, ctx: TrainContext, optimizer: torch.optim.Optimizer) -> None:
        pass

    @abstractmethod
    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor,
             ctx: TrainContext) -> torch.Tensor:
        """The loss of one step; `model` is `self.module` as accelerate prepared it."""

    def after_step(self, ctx: TrainContext) -> None:
        pass

    def end_task(self, ctx: TrainContext) -> None:
        pass

    # ---- records --------------------------------------------------------------------------------------------
    @abstractmethod
    def param_counts(self) -> dict[str, int]:
        """Parameter counts after a task; `trainable` = the parameters the task's optimizer could change."""

    def usage(self, tasks: list[str]) -> dict | None:
        """usage.npz content (expert selections), None for a method without experts."""
        return None

    def selection_counts(self) -> tuple[list[str], torch.Tensor] | None:
        """(layer names, expert selection counts [L, E] of the current task) for the live curves; None without
        experts."""
        return None

    @property
    def events(self) -> list[dict[str, Any]]:
        """What the method did between and within tasks (events.jsonl lines)."""
        return self._events

    def log(self, ctx: TrainContext, action: str, **extra) -> None:
        self._events.append({"step": ctx.global_step, "task": ctx.task, "task_name": ctx.task_name,
                            "tower": None, "block": None, "action": action, "experts": [], **extra})

    def state_dict(self) -> dict:
        return {"events": list(self._events)}

    def load_state_dict(self, state: dict) -> None:
        self._events = list(state["events"])


def rate_of(task: str, default: float, per_task: dict) -> float:
    """Task `task`'s learning rate from a per-task table whose names follow `config.dataset_key`'s rule (registered
    aliases, case and punctuation: `Cars` in the table is the task StanfordCars)."""
    by_key = {dataset_key(n): lr for n, lr in per_task.items()}
    return float(by_key.get(dataset_key(task), default))


def build(cfg) -> Method:
    """The configured method (`method.name`), not yet attached to a model."""
    return METHODS.get(cfg.method.name).obj.from_config(cfg)
