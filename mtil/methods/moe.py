"""`moe`: MoE adapters in the frozen CLIP, their experts managed by a lifecycle policy (`policy.name`).

What trains: the adapters (experts and the current task's router) with `SlotAdamW` (one step count per expert
slot); the `SliceGuard` keeps frozen and inactive experts and the other tasks' routers bit-identical. Loss: CLIP
logits against the task's class prompts, cross-entropy with label smoothing, plus the load-balancing loss when
`moe.balance_weight` > 0. Between tasks: whatever the policy does (freeze, merge, grow); the task's router is
opened to every active expert at its start and closed to the experts active at its end.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .. import policies
from ..engine import optimizer as optim
from ..engine.slice_guard import SliceGuard
from ..model import moe
from ..model.usage import UsageTracker
from ..policies import Policy, TrainContext
from .base import Method, MethodFacts, register


@register("moe")
class MoE(Method):
    lr_table = "train.lr_per_task"

    def __init__(self, facts: MethodFacts, policy: Policy, *, adapters: dict, lr: float, lr_per_task: dict,
                 balance_weight: float, router_snapshot_every: int, update: str = "single-gpu"):
        super().__init__(facts)
        self.policy = policy
        self.adapter_args = {**adapters, **policy.adapter_overrides()}
        self.lr, self.lr_per_task = lr, dict(lr_per_task)
        self.balance_weight, self.router_snapshot_every = balance_weight, router_snapshot_every
        self.update = update
        self.tracker: UsageTracker | None = None
        self.guard: SliceGuard | None = None
        self.router = 0

    @classmethod
    def from_config(cls, cfg) -> "MoE":
        m = cfg.moe
        adapters = dict(towers=tuple(m.towers), blocks=m.blocks, num_experts=m.num_experts, top_k=m.top_k,
                        hidden=m.hidden, gating=m.gating, noisy_gating=m.noisy_gating, dropout=m.dropout,
                        scale=m.scale, adapter_input=m.adapter_input, expert_init=m.expert_init,
                        num_routers=len(cfg.data.order) if m.router == "per_task" else 1)
        return cls(MethodFacts.from_config(cfg), policies.build(cfg), adapters=adapters, lr=cfg.train.lr,
                   lr_per_task=cfg.train.lr_per_task, balance_weight=m.balance_weight,
                   router_snapshot_every=cfg.train.router_snapshot_every, update=cfg.train.update_mode)

    @property
    def events(self) -> list[dict]:
        return self.policy.events   # the policy logs the lifecycle actions

    def attach(self, backbone, accelerator, tasks, fresh: bool) -> moe.AdaptedCLIP:
        self.model = self.module = moe.attach(backbone.model, **self.adapter_args)
        self.tracker = UsageTracker(self.model)
        self.policy.attach(self.model, self.tracker, fresh=fresh)
        return self.model

    def build_optimizer(self, lr: float, weight_decay: float) -> optim.SlotAdamW:
        return optim.build_optimizer(self.model, lr, weight_decay)

    def clip_gradients(self, accelerator, max_norm: float) -> None:
        self.guard.zero_locked_grads()   # a locked expert's gradient does not count in the norm
        accelerator.clip_grad_norm_(self.model.adapter_parameters(), max_norm)

    def begin_task(self, ctx: TrainContext, optimizer) -> None:
        self.router = self.policy.router_of(ctx)
        self.guard = SliceGuard(self.model, optimizer, self.router, self.update)
        ctx.on_slot_change = functools.partial(optim.reset_state, optimizer)
        if ctx.step == 0:
            self.tracker.new_window()
            self.tracker.reset_router_mass()  # router-weight snapshots never straddle two tasks
            self.model.open_router(self.router)  # it may select every active expert, including those grown from here on
            self.policy.begin_task(ctx)
        self.model.routing.tracking = True
        self.model.routing.balance = self.balance_weight > 0

    def loss(self, model, images, labels, tokens, ctx: TrainContext) -> torch.Tensor:
        logits = model(images, tokens, self.router)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.facts.label_smoothing)
        self.loss_terms = {"ce": loss.detach()}
        if self.balance_weight > 0:
            balance = self.balance_weight * self.model.aux_loss()
            self.loss_terms["balance"] = balance.detach()
            loss = loss + balance
        return loss

    def after_step(self, ctx: TrainContext) -> None:
        self.policy.after_step(ctx)
        if self.router_snapshot_every and ctx.step % self.router_snapshot_every == 0:
            self.tracker.snapshot_router(ctx.global_step)

    def end_task(self, ctx: TrainContext) -> None:
        self.model.routing.tracking = self.model.routing.balance = False
        self.policy.end_task(ctx)
        self.model.close_router(self.router)     # later growth cannot reach this task's router (kept in the checkpoint)
        self.tracker.end_task()
        self.guard.remove()

    def param_counts(self) -> dict[str, int]:
        """`AdaptedCLIP.param_counts()`; `trainable` = the active experts not frozen plus one router (and its
        noise weights): what one task's optimizer may change."""
        counts = self.model.param_counts()
        router = sum(t[0].numel() for layer in self.model.layers for t in layer.router_tensors())
        return {**counts, "trainable": counts["trainable_experts"] + router}

    def usage(self, tasks: list[str]) -> dict:
        return self.tracker.arrays(tasks)

    def selection_counts(self) -> tuple[list[str], torch.Tensor]:
        return self.tracker.layer_names, self.tracker.task_counts()

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.tracker.load_state_dict(state["tracker"])
