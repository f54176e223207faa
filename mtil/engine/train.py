"""Training, one task at a time: `TrainSettings` (read from the config once) and the `Trainer`'s step loop, which
calls into the method (`mtil.methods`: build_optimizer / begin_task / loss / clip_gradients / after_step /
end_task).

Per task, as MoE-Adapters' and ZSCL's `finetune`: a fresh optimizer over what the method trains (the MoE adapters:
`optim.SlotAdamW` under the method's `SliceGuard`; full fine-tuning: torch's AdamW) with the task's learning rate
and their `utils.cosine_lr` schedule (`train.schedule`, stepped per update); the method's loss (CLIP logits of the
batch against the task's class prompts, first template, cross-entropy with label smoothing, plus the method's own
terms); gradients cleared with `set_to_none`. The references loop `range(iterations + 1)`: their last iteration runs
at the schedule's end lr (0) and changes no weight, but its batch counts in the experts' usage; `train.final_step`
runs it too (after the `iterations` updates, without the method's after_step). A non-finite loss stops the run
before anything is written, so the last checkpoint stays the last good one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

from tqdm.auto import tqdm

from ..data.pipeline import Skipped, TaskData, train_loader
from ..errors import NonFiniteLoss
from ..policies import TrainContext
from . import optimizer as optim

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
    update_mode: str          # read by the MoE method's SliceGuard (train.update_mode)
    label_smoothing: float
    grad_clip: float | None
    checkpoint_every: int
    router_snapshot_every: int
    log_every: int
    seed: int
    num_workers: int          # data.num_workers
    bad_images: str           # data.bad_images

    @classmethod
    def from_config(cls, cfg) -> "TrainSettings":
        return cls(**dict(cfg.train), seed=cfg.seed, num_workers=cfg.data.num_workers, bad_images=cfg.data.bad_images)


class Trainer:
    """Trains one task at a time on the run's live objects. `model` is the method's training module as accelerate
    prepared it (maybe DDP-wrapped), `method` the run's `mtil.methods.Method`."""

    def __init__(self, settings: TrainSettings, *, accelerator, model, method, transform, tokenizer,
                 skipped: Skipped | None = None, on_log: Callable[[TrainContext, float, float], None] | None = None):
        self.s, self.accelerator, self.model, self.method = settings, accelerator, model, method
        self.transform, self.tokenizer = transform, tokenizer
        self.skipped = Skipped() if skipped is None else skipped
        self.on_log = on_log   # called as on_log(ctx, loss, lr) every train.log_every steps (the live curves)

    def fit(self, task: TaskData, task_index: int, *, start_step: int = 0, global_step: int = 0,
            resume_state: dict | None = None, save_checkpoint: Callable[[dict], None] | None = None) -> int:
        """Train task `task_index` from `start_step` to `iterations`; returns the new global step.
        `save_checkpoint(train_state)` is called for mid-task checkpoints with optimizer/scheduler state."""
        s, accelerator, method = self.s, self.accelerator, self.method
        iterations = s.iterations
        optimizer = method.build_optimizer(method.lr_of(task.name), s.weight_decay)
        scheduler = optim.build_scheduler(optimizer, iterations, s.warmup_steps, s.min_lr, s.schedule)
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
        prepared_optimizer = accelerator.prepare_optimizer(optimizer, device_placement=True)
        ctx = TrainContext(task_index, task.name, start_step, global_step)
        method.begin_task(ctx, optimizer)
        tokens = self.tokenizer([p[0] for p in task.prompts(all_templates=False)]).to(accelerator.device)
        stop = iterations + int(s.final_step)
        loader = train_loader(task, self.transform, seed=s.seed, task_index=task_index, start=start_step, stop=stop,
                              batch_size=s.batch_size, rank=accelerator.process_index, world=accelerator.num_processes,
                              workers=s.num_workers, bad_images=s.bad_images)
        self.model.train()
        skipped = self.skipped
        bar = tqdm(skipped.batches(loader), total=len(loader), desc=f"task {task_index + 1}/{len(method.facts.tasks)} "
                   f"{task.name}", unit="step", disable=None)   # one bar per task (none when not a terminal)
        for batch in bar:
            if batch is None:
                continue
            images, labels = (t.to(accelerator.device) for t in batch)
            with accelerator.autocast():
                loss = method.loss(self.model, images, labels, tokens, ctx)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss became {value} at task {task_index + 1} ({task.name}) step {ctx.step + 1}")
            accelerator.backward(loss)
            if s.grad_clip:
                method.clip_gradients(accelerator, s.grad_clip)
            final = ctx.step == iterations   # the reference's extra last iteration (train.final_step)
            # lr of this update: warm-up starts at lr / warmup_steps, not 0; the final iteration's is the end lr
            scheduler.step_update(ctx.step + 1)
            prepared_optimizer.step()
            prepared_optimizer.zero_grad(set_to_none=True)
            if final:
                continue
            ctx.step += 1
            ctx.global_step += 1
            ctx.loss = value
            method.after_step(ctx)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            if s.log_every and ctx.step % s.log_every == 0:
                lr = optimizer.param_groups[0]["lr"]
                log.debug("task %s step %d loss %.4f lr %.2e", task.name, ctx.step, value, lr)
                if self.on_log is not None:
                    self.on_log(ctx, value, lr)
            if save_checkpoint and s.checkpoint_every and ctx.step % s.checkpoint_every == 0 and ctx.step < iterations:
                save_checkpoint({"step": ctx.step, "global_step": ctx.global_step,
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        bar.close()
        method.end_task(ctx)
        if skipped[(task.name, "train")]:
            log.warning("%s: %d undecodable training images skipped (data.bad_images=skip)", task.name,
                        skipped[(task.name, "train")])
        release(accelerator, prepared_optimizer)
        return ctx.global_step


def release(accelerator, prepared_optimizer) -> None:
    """Forget a task's optimizer in the Accelerator, which keeps every optimizer it prepared (`_optimizers`) for
    the life of the run: without this, each finished task's optimizer state stayed in memory (full fine-tuning of
    ViT-B/16: 1.2 GB of AdamW moments per task, 13 GB after Order I; the MoE adapters: 0.36 GB per task)."""
    held = getattr(accelerator, "_optimizers", None)
    if isinstance(held, list):
        held[:] = [o for o in held if o is not prepared_optimizer]
