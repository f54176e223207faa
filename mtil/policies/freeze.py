"""`freeze`: MoE-Adapters' activate-freeze.

During task t each layer counts how often each expert is among a sample's top-k; at the end of task t the
`count` most-selected experts of every layer (default: top-k) become frozen for all later tasks. The frozen set
is cumulative and lives in the adapters' `frozen` masks, so it is part of every checkpoint.
"""
import torch

from .base import Policy, RunFacts, TrainContext, register


@register("freeze")
class Freeze(Policy):
    def __init__(self, run: RunFacts, count: int | None = None):
        super().__init__(run)
        self.count = run.top_k if count is None else count   # experts frozen per layer at each task end

    @classmethod
    def from_config(cls, run: RunFacts, section) -> "Freeze":
        return cls(run, count=section.freeze.count)

    def end_task(self, ctx: TrainContext) -> None:
        counts = self.tracker.task_counts()
        k = self.count
        for layer, row in zip(self.model.layers, counts):
            row = row.masked_fill(~layer.active, -1)
            order = torch.argsort(row, descending=True, stable=True)[:k]
            chosen = [int(e) for e in order if row[e] > 0]
            newly = [e for e in chosen if not bool(layer.frozen[e])]
            layer.frozen[chosen] = True
            if newly:
                self.log(ctx, "freeze", layer, newly, counts=[int(row[e]) for e in newly])
