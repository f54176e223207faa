"""`icarl`: iCaRL as ZSCL runs it for CLIP (`mtil/src/models/icarl.py`, `mtil/src/dynamic_dataset.py`).

Memory: after each task, exemplars of its training images (the first `candidates` rows of the split, evaluation
preprocessing) are kept within a budget K = `memory`:
  * `selection: reference` (ZSCL's DynamicDataset): after the first task, its first K images; after task t (t sets
    in memory with the new one) every earlier set is cut to its first K // t and the new one gets K - K // t
    exemplars by herding over its candidates' normalized image features under the just-trained model (each step
    takes the candidate that keeps the mean of the chosen nearest to the mean of all, computed as the reference
    does). The reference deletes each chosen feature row but indexes the unshrunk image list with the position in
    the shrunk one, so the image it stores is not always the one herding chose (and may repeat); this mode does the
    same. The memory so holds more than K from the third task on (2 x 3333 + 6667 for K = 10000).
  * `selection: per_class`: classic iCaRL: K // (classes seen) exemplars per class, by herding within the class (the
    chosen images), the classes of earlier tasks cut to the new share.
Training on task t > 0: full fine-tuning (`finetune`) plus distillation (`distill`) of the exemplars of all earlier
tasks against zero-shot CLIP (`--ref-model` unset) over the CURRENT task's class prompts (the reference: "use
training dataset template in iCaRL"), exemplar batches in memory order (`order: sequential`: the reference's
`helpers.batch` generator, the last batch of a pass shorter). The first task is plain fine-tuning (icarl.py calls
`finetune` for it). The classifier is CLIP's own, the class prompts' text features, as ZSCL evaluates every method
(no nearest-mean-of-exemplars classifier). icarl.py hard-codes the learning rates of the scripts (5e-5 for Aircraft
and MNIST, else 1e-5); here they come from method.finetune.
"""
from __future__ import annotations

import torch

from ..data.pipeline import eval_loader
from ..policies import TrainContext
from .base import MethodFacts, register
from .distill import Distilling, ImageList


def herding(features: torch.Tensor, m: int, shrinking_index: bool = False) -> list[int]:
    """iCaRL's herding over normalized features [n, d]: m picks (at most n), each the candidate whose addition
    keeps the mean of the picked nearest to the mean of all (ZSCL's float32 arithmetic). Returns the picked rows, or
    with `shrinking_index` each pick's position in the candidate list left at that step (what ZSCL stores)."""
    mean = features.mean(0)
    remaining = torch.arange(len(features))
    total = torch.zeros_like(mean)
    out = []
    for k in range(min(m, len(features))):
        feats = features[remaining]
        if k == 0:
            i = int(((mean - feats) ** 2).sum(1).argmin())
        else:
            i = int(((mean - (1 / (k + 1)) * (feats + total)) ** 2).sum(1).argmin())
        total = total + feats[i]
        out.append(i if shrinking_index else int(remaining[i]))
        remaining = torch.cat([remaining[:i], remaining[i + 1:]])
    return out


@register("icarl")
class ICaRL(Distilling):
    def __init__(self, facts: MethodFacts, *, memory: int = 10000, selection: str = "reference",
                 candidates: int = 30000, order: str = "sequential", **distill):
        super().__init__(facts, **distill)
        self.budget, self.selection, self.candidates, self.order = memory, selection, candidates, order
        self.memory: dict[str, list[list[int]]] = {}   # task name -> exemplar rows, one group (or one per class)

    @classmethod
    def from_config(cls, cfg) -> "ICaRL":
        return cls(MethodFacts.from_config(cfg), **dict(cfg.method.icarl), **cls.finetune_args(cfg))

    def exemplars(self) -> list[tuple[str, int]]:
        """(task name, training row) of every exemplar, in memory order (task order, then group order)."""
        return [(name, row) for name, groups in self.memory.items() for group in groups for row in group]

    def reference_set(self, task, ctx: TrainContext) -> ImageList | None:
        names = list(self.memory)
        if not names:
            return None
        data = {t.name: t.train for t in self.tasks}
        return ImageList([(n, data[n]) for n in names], [(names.index(n), row) for n, row in self.exemplars()],
                         self.transform, self.facts.bad_images)

    @torch.no_grad()
    def candidate_features(self, task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalized image features, labels, rows) of the task's first `candidates` training images that decode."""
        ds = task.train.select(range(min(self.candidates, len(task.train))))
        was_training = self.clip.training
        self.clip.eval()
        feats, labels, rows = [], [], []
        for batch, _ in eval_loader(ds, self.transform, task.name, "train", self.facts.eval_batch_size,
                                    self.facts.num_workers, self.facts.bad_images):
            if batch is None:
                continue
            x, y, idx = batch
            feats.append(self.clip.encode_image(x.to(self.device), normalize=True).float())
            labels.append(y)
            rows.append(idx)
        self.clip.train(was_training)
        return torch.cat(feats), torch.cat(labels), torch.cat(rows)

    def update_memory(self, task) -> None:
        k = self.budget
        if self.selection == "reference":
            if not self.memory:
                self.memory[task.name] = [list(range(min(k, self.candidates, len(task.train))))]
                return
            sets = len(self.memory) + 1
            for groups in self.memory.values():
                groups[0] = groups[0][:k // sets]
            feats, _, rows = self.candidate_features(task)
            # the reference stores the image at the shrinking-list position into its candidate list (all rows when
            # every candidate decodes)
            self.memory[task.name] = [[int(rows[i]) for i in herding(feats, k - k // sets, shrinking_index=True)]]
            return
        classes = sum(len(t.classnames) for t in self.tasks if t.name in self.memory) + len(task.classnames)
        share = k // classes
        for groups in self.memory.values():
            groups[:] = [g[:share] for g in groups]
        feats, labels, rows = self.candidate_features(task)
        groups = []
        for c in range(len(task.classnames)):
            members = (labels == c).nonzero().squeeze(1)
            groups.append([int(rows[members[i]]) for i in herding(feats[members], share)])
        self.memory[task.name] = groups

    def end_task(self, ctx: TrainContext) -> None:
        super().end_task(ctx)
        self.update_memory(self.tasks[ctx.task])
        self.log(ctx, "icarl-memory", sizes={n: sum(len(g) for g in groups) for n, groups in self.memory.items()})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": {n: [list(g) for g in groups] for n, groups in self.memory.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memory = {n: [list(g) for g in groups] for n, groups in state["memory"].items()}
