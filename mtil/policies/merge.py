"""`merge` (expert merging in MoE, composed with freeze), its controls, and the diagnostics of every merge.

Every `merge.every` steps of a task (after `merge.warmup` steps), in every layer: the two experts selected most
often in the current window, a and b, are averaged (every expert tensor, W = (W_a + W_b) / 2) into the
least-used non-frozen slot c (c not in {a, b}); c's optimizer state is reset and the window restarts. The router
keeps learning whether to pick the merged expert; `copy_router` writes the mean of a's and b's columns into c's
column of the current task's router only. With `merge.window` set, only the last `window` steps before a
merge are counted. A layer with fewer than two selected experts or no eligible slot is skipped and logged.
A merge due on the task's last step is skipped and logged (`merge.last_step: skip`): its target would otherwise
be frozen or evaluated without a single training step; `merge.last_step: merge` performs it (earlier mtil).

Controls, which change one thing each and keep the slot choice and skip rules: `merge.pair: random` draws a and b
uniformly from the eligible sources (a generator seeded with the run's seed, checkpointed), whether selected or
not; `merge.combine: copy` writes W_a into c instead of the mean (router column too, with `copy_router`).

Diagnostics, added to each `merge` event: `cosine` of the flattened expert tensors of a and b before the merge;
`share_before` (c's share of the layer's top-k selections in the window that chose it) and, once the next merge
step or the task's end closes it, `share_after` / `selections_after` (c's share of the layer's selections from the
merge on) and, at the task's end, `frozen_at_end` (c is frozen by the task-end freeze); `loss_earlier`,
`loss_before`, `loss_after`: the mean training loss of the `merge.loss_steps` steps two windows before, just
before (the merge step's own included) and just after the merge (fewer after it when the next merge or the task's
end comes first: `loss_after_steps`). The losses are the whole model's, so they are the same in every layer's
event of one merge step; loss_before - loss_earlier is the drift of two windows without a merge.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .base import RunFacts, TrainContext, register
from .freeze import Freeze

log = logging.getLogger(__name__)
PAIRS = ("top", "random")
COMBINES = ("mean", "copy")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@register("merge")
class Merge(Freeze):
    def __init__(self, run: RunFacts, count: int | None = None, *, every: int, warmup: int, window: int | None,
                 copy_router: bool, frozen_sources: bool, last_step: str, pair: str = "top", combine: str = "mean",
                 loss_steps: int = 5):
        super().__init__(run, count)
        self.every, self.warmup, self.window = every, warmup, window
        self.copy_router, self.frozen_sources, self.last_step = copy_router, frozen_sources, last_step
        self.pair, self.combine, self.loss_steps = pair, combine, loss_steps
        self.rng = torch.Generator().manual_seed(run.seed)   # random pairs only
        self.losses: list[float] = []    # this task's last 2 x loss_steps training losses
        self.pending: dict | None = None  # the last merge step whose after-diagnostics are still open

    @classmethod
    def from_config(cls, run: RunFacts, section) -> "Merge":
        m = section.merge
        return cls(run, section.freeze.count, every=m.every, warmup=m.warmup, window=m.window,
                   copy_router=m.copy_router, frozen_sources=m.frozen_sources, last_step=m.last_step,
                   pair=m.pair, combine=m.combine, loss_steps=m.loss_steps)

    def begin_task(self, ctx: TrainContext) -> None:
        self.losses = []

    def after_step(self, ctx: TrainContext) -> None:
        self.record_loss(ctx.loss)
        step, every = ctx.step, self.every   # the window restarts with each task (training loop) and each merge
        if self.window is not None and self.window < every and step % every == every - self.window:
            self.tracker.new_window()
        if step < self.warmup or step % every != 0:
            return
        if step >= self.run.iterations and self.last_step == "skip":
            log.info("task %s: the merge due on its last step (%d) is skipped (policy.merge.last_step=skip)",
                     ctx.task_name, step)
            self.log(ctx, "merge-skipped", None, [], reason="last step of the task: the merged expert would be "
                                                            "evaluated without a training step (merge.last_step)")
            return
        self.close_pending()
        counts = self.tracker.task_counts()
        n = self.loss_steps
        merged = []
        for i, (layer, window) in enumerate(zip(self.model.layers, self.tracker.window())):
            c = self.merge_layer(ctx, layer, window)
            if c is not None:
                event = self.events[-1]
                event.update(loss_earlier=_mean(self.losses[-2 * n:-n]), loss_before=_mean(self.losses[-n:]))
                merged.append((len(self.events) - 1, i, c))
        if merged:
            self.pending = {"merged": merged, "counts": counts.tolist(), "losses": []}
        self.tracker.new_window()

    def sources(self, layer, counts: torch.Tensor) -> tuple[int, int] | str:
        """(a, b), or why the layer has none."""
        allowed = layer.active if self.frozen_sources else layer.active & ~layer.frozen
        if self.pair == "random":
            candidates = allowed.nonzero().flatten()
            if len(candidates) < 2:
                return "fewer than two eligible source experts"
            a, b = candidates[torch.randperm(len(candidates), generator=self.rng)[:2]].tolist()
            return a, b
        ranked = torch.argsort(counts.masked_fill(~allowed, -1), descending=True, stable=True)
        a, b = int(ranked[0]), int(ranked[1]) if len(ranked) > 1 else -1
        if b < 0 or counts[a] <= 0 or counts[b] <= 0 or not bool(allowed[b]):
            return "fewer than two selected experts in the window"
        return a, b

    @torch.no_grad()
    def merge_layer(self, ctx: TrainContext, layer, counts: torch.Tensor) -> int | None:
        """Merge in one layer; returns the target slot c, or None when the layer is skipped (logged)."""
        pair = self.sources(layer, counts)
        if isinstance(pair, str):
            self.log(ctx, "merge-skipped", layer, [], reason=pair)
            return None
        a, b = pair
        eligible = layer.active & ~layer.frozen
        eligible[[a, b]] = False
        if not bool(eligible.any()):
            self.log(ctx, "merge-skipped", layer, [a, b], reason="no eligible (non-frozen, unused) slot")
            return None
        c = int(torch.argmin(counts.masked_fill(~eligible, torch.iinfo(counts.dtype).max)))
        tensors = layer.expert_tensors()
        cosine = float(F.cosine_similarity(torch.cat([t.data[a].flatten() for t in tensors]),
                                           torch.cat([t.data[b].flatten() for t in tensors]), dim=0))
        for tensor in tensors:
            tensor.data[c] = self.combined(tensor.data[a], tensor.data[b])
        if self.copy_router:  # only the current task's router: the others are never written
            r = self.router_of(ctx)
            for tensor in layer.router_tensors():
                tensor.data[r, :, c] = self.combined(tensor.data[r, :, a], tensor.data[r, :, b])
        ctx.slot_changed(layer, c, router_column=self.copy_router)
        total = int(counts.sum())
        self.log(ctx, "merge", layer, [a, b, c], counts=[int(counts[a]), int(counts[b]), int(counts[c])],
                 cosine=cosine, share_before=int(counts[c]) / total if total else None)
        return c

    def combined(self, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        return (wa + wb) / 2 if self.combine == "mean" else wa.clone()

    # ---- diagnostics ------------------------------------------------------------------------------------------
    def record_loss(self, loss: float | None) -> None:
        if loss is None:
            return
        self.losses = (self.losses + [loss])[-2 * self.loss_steps:]
        if self.pending is not None and len(self.pending["losses"]) < self.loss_steps:
            self.pending["losses"].append(loss)

    def close_pending(self, task_end: bool = False) -> None:
        """Write the after-merge diagnostics of the open merge step into its events."""
        if self.pending is None:
            return
        now = self.tracker.task_counts()
        before = torch.tensor(self.pending["counts"], dtype=now.dtype)
        losses = self.pending["losses"]
        for index, i, c in self.pending["merged"]:
            since = now[i] - before[i]
            total = int(since.sum())
            event = self.events[index]
            event.update(share_after=int(since[c]) / total if total else None, selections_after=total,
                         loss_after=_mean(losses), loss_after_steps=len(losses))
            if task_end:
                event["frozen_at_end"] = bool(self.model.layers[i].frozen[c])
        self.pending = None

    def end_task(self, ctx: TrainContext) -> None:
        super().end_task(ctx)   # freeze first: frozen_at_end says whether the merged slot survived it
        self.close_pending(task_end=True)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.get_state(), "losses": list(self.losses),
                "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "rng" in state:   # checkpoints of earlier mtil lack the controls' and diagnostics' state
            self.rng.set_state(state["rng"])
        self.losses, self.pending = list(state.get("losses", [])), state.get("pending")
