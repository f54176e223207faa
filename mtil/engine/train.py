"""Training of one task: the step loop that calls into the policy (begin_task / after_step / end_task).

Per task: a fresh AdamW (`optim.SlotAdamW`: one step count per expert slot) over the adapters with the task's
learning rate and timm's cosine schedule with warm-up (stepped per update); CLIP logits of the batch against the task's class prompts (first template),
cross-entropy with label smoothing, plus the load-balancing loss when its weight is > 0. The `SliceGuard`
keeps frozen / inactive experts and the other tasks' routers bit-identical. The task's router is opened to every
active expert at the start and closed to the experts active at the end (`AdaptedCLIP.close_router`). A non-finite loss stops the run
before anything is written, so the last checkpoint stays the last good one.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.pipeline import Skipped, TaskData, train_loader
from ..errors import MtilError, NonFiniteLoss
from ..policies import Policy, TrainContext
from . import optimizer as optim

log = logging.getLogger(__name__)


def task_lr(train_cfg, name: str) -> float:
    return float(train_cfg.lr_per_task.get(name, train_cfg.lr))


def fit_task(*, accelerator, model, adapted, policy: Policy, tracker, task: TaskData, task_index: int, router: int,
             cfg, transform, tokenizer, start_step: int, global_step: int, resume_state: dict | None,
             save_checkpoint: Callable[[dict], None], skipped: Skipped | None = None) -> int:
    """Train task `task_index` from `start_step` to `cfg.train.iterations`; returns the new global step.

    `model` is what accelerate prepared (maybe DDP-wrapped), `adapted` the bare `AdaptedCLIP`.
    `save_checkpoint(train_state)` is called for mid-task checkpoints with optimizer/scheduler state.
    """
    tc = cfg.train
    iterations = tc.iterations
    optimizer = optim.build_optimizer(adapted, task_lr(tc, task.name), tc.weight_decay)
    scheduler = optim.build_scheduler(optimizer, iterations, tc.warmup_steps, tc.min_lr)
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
    guard = optim.SliceGuard(adapted, optimizer, router)
    prepared_optimizer = accelerator.prepare_optimizer(optimizer, device_placement=True)
    ctx = TrainContext(task_index, task.name, start_step, global_step, optimizer)
    if start_step == 0:
        tracker.new_window()
        tracker.reset_router_mass()  # router-weight snapshots never straddle two tasks
        adapted.open_router(router)  # it may select every active expert, including those grown from here on
        policy.begin_task(ctx)
    tokens = tokenizer([p[0] for p in task.prompts(all_templates=False)]).to(accelerator.device)
    loader = train_loader(task, transform, seed=cfg.seed, task_index=task_index, start=start_step, stop=iterations,
                          batch_size=tc.batch_size, rank=accelerator.process_index, world=accelerator.num_processes,
                          workers=cfg.data.num_workers, bad_images=cfg.data.bad_images)
    adapted.routing.tracking = True
    adapted.routing.balance = cfg.moe.balance_weight > 0
    model.train()
    skipped = Skipped() if skipped is None else skipped
    bar = tqdm(skipped.batches(loader), total=len(loader), desc=f"task {task_index + 1} {task.name}", leave=False, disable=None)
    for batch in bar:
        if batch is None:
            continue
        images, labels = (t.to(accelerator.device) for t in batch)
        with accelerator.autocast():
            logits = model(images, tokens, router)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=tc.label_smoothing)
            if cfg.moe.balance_weight > 0:
                loss = loss + cfg.moe.balance_weight * adapted.aux_loss()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value} at task {task_index + 1} ({task.name}) step {ctx.step + 1}")
        accelerator.backward(loss)
        if tc.grad_clip:
            accelerator.clip_grad_norm_(adapted.adapter_parameters(), tc.grad_clip)
        scheduler.step_update(ctx.step + 1)  # lr of this update: warm-up starts at lr / warmup_steps, not 0
        prepared_optimizer.step()
        prepared_optimizer.zero_grad(set_to_none=True)
        ctx.step += 1
        ctx.global_step += 1
        policy.after_step(ctx)
        if tc.router_snapshot_every and ctx.step % tc.router_snapshot_every == 0:
            tracker.snapshot_router(ctx.global_step)
        if tc.log_every and ctx.step % tc.log_every == 0:
            log.info("task %s step %d loss %.4f lr %.2e", task.name, ctx.step, value, optimizer.param_groups[0]["lr"])
            bar.set_postfix(loss=f"{value:.3f}")
        if tc.checkpoint_every and ctx.step % tc.checkpoint_every == 0 and ctx.step < iterations:
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
