"""Training, one task at a time: `TrainSettings` (read from the config once) and the `Trainer`'s step loop, which
calls into the policy (begin_task / after_step / end_task).

Per task, as MoE-Adapters' `finetune`: a fresh AdamW (`optim.SlotAdamW`: one step count per expert slot) over the
adapters with the task's learning rate and its `utils.cosine_lr` schedule (`train.schedule`, stepped per update);
CLIP logits of the batch against the task's class prompts (first template), cross-entropy with label smoothing,
plus the load-balancing loss when its weight is > 0; gradients cleared with `set_to_none`. The `SliceGuard` makes
each step update only what the reference's step updates: experts routed at least one sample (an unselected
expert, a frozen or inactive one and the other tasks' routers stay bit-identical, Adam state included). The
reference loops `range(iterations + 1)`: its last iteration runs at the schedule's end lr (0) and changes no weight,
but its batch counts in the experts' usage; `train.final_step` runs it too (after the `iterations` updates, without
policy hooks). The task's router is opened to every
active expert at the start and closed to the experts active at the end (`AdaptedCLIP.close_router`). A non-finite loss stops the run
before anything is written, so the last checkpoint stays the last good one. When a policy rewrites a slot (a merge
target, a grown expert) it calls `ctx.slot_changed`, and the loop restarts that slot's optimizer state
(`optimizer.reset_state`): policies never touch the optimizer.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.pipeline import Skipped, TaskData, train_loader
from ..errors import NonFiniteLoss
from ..policies import Policy, TrainContext
from . import optimizer as optim
from .slice_guard import SliceGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What the training loop reads from the config (`from_config`), once per run."""
    iterations: int
    batch_size: int
    lr: float
    lr_per_task: dict
    weight_decay: float
    warmup_steps: int
    min_lr: float
    schedule: str
    final_step: bool
    label_smoothing: float
    grad_clip: float | None
    checkpoint_every: int
    router_snapshot_every: int
    log_every: int
    balance_weight: float     # moe.balance_weight
    seed: int
    num_workers: int          # data.num_workers
    bad_images: str           # data.bad_images

    @classmethod
    def from_config(cls, cfg) -> "TrainSettings":
        return cls(**dict(cfg.train), balance_weight=cfg.moe.balance_weight, seed=cfg.seed,
                   num_workers=cfg.data.num_workers, bad_images=cfg.data.bad_images)

    def lr_of(self, task: str) -> float:
        return float(self.lr_per_task.get(task, self.lr))


class Trainer:
    """Trains one task at a time on the run's live objects. `model` is what accelerate prepared (maybe DDP-wrapped),
    `adapted` the bare `AdaptedCLIP`."""

    def __init__(self, settings: TrainSettings, *, accelerator, model, adapted, policy: Policy, tracker, transform,
                 tokenizer, skipped: Skipped | None = None):
        self.s, self.accelerator, self.model, self.adapted = settings, accelerator, model, adapted
        self.policy, self.tracker, self.transform, self.tokenizer = policy, tracker, transform, tokenizer
        self.skipped = Skipped() if skipped is None else skipped

    def fit(self, task: TaskData, task_index: int, router: int, *, start_step: int = 0, global_step: int = 0,
            resume_state: dict | None = None, save_checkpoint: Callable[[dict], None] | None = None) -> int:
        """Train task `task_index` from `start_step` to `iterations`; returns the new global step.
        `save_checkpoint(train_state)` is called for mid-task checkpoints with optimizer/scheduler state."""
        s, accelerator, adapted, policy, tracker = self.s, self.accelerator, self.adapted, self.policy, self.tracker
        iterations = s.iterations
        optimizer = optim.build_optimizer(adapted, s.lr_of(task.name), s.weight_decay)
        scheduler = optim.build_scheduler(optimizer, iterations, s.warmup_steps, s.min_lr, s.schedule)
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
        guard = SliceGuard(adapted, optimizer, router)
        prepared_optimizer = accelerator.prepare_optimizer(optimizer, device_placement=True)
        ctx = TrainContext(task_index, task.name, start_step, global_step,
                           on_slot_change=functools.partial(optim.reset_state, optimizer))
        if start_step == 0:
            tracker.new_window()
            tracker.reset_router_mass()  # router-weight snapshots never straddle two tasks
            adapted.open_router(router)  # it may select every active expert, including those grown from here on
            policy.begin_task(ctx)
        tokens = self.tokenizer([p[0] for p in task.prompts(all_templates=False)]).to(accelerator.device)
        stop = iterations + int(s.final_step)
        loader = train_loader(task, self.transform, seed=s.seed, task_index=task_index, start=start_step, stop=stop,
                              batch_size=s.batch_size, rank=accelerator.process_index, world=accelerator.num_processes,
                              workers=s.num_workers, bad_images=s.bad_images)
        adapted.routing.tracking = True
        adapted.routing.balance = s.balance_weight > 0
        self.model.train()
        skipped = self.skipped
        bar = tqdm(skipped.batches(loader), total=len(loader), desc=f"task {task_index + 1} {task.name}", leave=False, disable=None)
        for batch in bar:
            if batch is None:
                continue
            images, labels = (t.to(accelerator.device) for t in batch)
            with accelerator.autocast():
                logits = self.model(images, tokens, router)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=s.label_smoothing)
                if s.balance_weight > 0:
                    loss = loss + s.balance_weight * adapted.aux_loss()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss became {value} at task {task_index + 1} ({task.name}) step {ctx.step + 1}")
            accelerator.backward(loss)
            if s.grad_clip:
                guard.zero_locked_grads()
                accelerator.clip_grad_norm_(adapted.adapter_parameters(), s.grad_clip)
            final = ctx.step == iterations   # the reference's extra last iteration (train.final_step)
            # lr of this update: warm-up starts at lr / warmup_steps, not 0; the final iteration's is the end lr
            scheduler.step_update(ctx.step + 1)
            prepared_optimizer.step()
            prepared_optimizer.zero_grad(set_to_none=True)
            if final:
                continue
            ctx.step += 1
            ctx.global_step += 1
            policy.after_step(ctx)
            if s.router_snapshot_every and ctx.step % s.router_snapshot_every == 0:
                tracker.snapshot_router(ctx.global_step)
            if s.log_every and ctx.step % s.log_every == 0:
                log.info("task %s step %d loss %.4f lr %.2e", task.name, ctx.step, value, optimizer.param_groups[0]["lr"])
                bar.set_postfix(loss=f"{value:.3f}")
            if save_checkpoint and s.checkpoint_every and ctx.step % s.checkpoint_every == 0 and ctx.step < iterations:
                save_checkpoint({"step": ctx.step, "global_step": ctx.global_step,
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        adapted.routing.tracking = adapted.routing.balance = False
        policy.end_task(ctx)
        adapted.close_router(router)     # later growth cannot reach this task's router (kept in the checkpoint)
        tracker.end_task()
        guard.remove()
        if skipped[(task.name, "train")]:
            log.warning("%s: %d undecodable training images skipped (data.bad_images=skip)", task.name,
                        skipped[(task.name, "train")])
        return ctx.global_step
