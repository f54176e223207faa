"""What the distilling baselines share (lwf, icarl, zscl): ZSCL's distillation loss, a frozen teacher CLIP, and
batches of reference images that are a pure function of (seed, task, step).

ZSCL (`mtil/src/models/finetune.py`, `helpers.distillation`): for reference images x and reference texts w,
  teacher logits  t = s * f_T(x) @ g_T(w)^T,   student logits  u = s * f_S(x) @ g_T(w)^T
with normalized features, s = exp(logit_scale), the TEACHER's text features g_T on both sides (so the student's
text tower gets no distillation gradient), and
  distillation(t, u, T) = cross-entropy of u / T against softmax(t / T), mean over rows, times T^2;
the image loss is distillation(t, u) (each image's distribution over the texts), the text loss distillation(t^T, u^T)
(each text's distribution over the batch's images). The teacher's text features are computed once per task (the
reference recomputes the same values every step with the same frozen teacher).
"""
from __future__ import annotations

import copy
import math
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ..data.pipeline import StepBatches, Undecodable, decode
from ..policies import TrainContext
from .finetune import FineTune


def distillation(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """ZSCL's helpers.distillation: soft-target cross-entropy at temperature T, scaled by T^2."""
    target = F.softmax(teacher / temperature, dim=1)
    return F.cross_entropy(student / temperature, target) * temperature ** 2


def distillation_loss(teacher_images: torch.Tensor, student_images: torch.Tensor, texts: torch.Tensor,
                      scale: torch.Tensor, temperature: float, image_loss: bool, text_loss: bool) -> torch.Tensor:
    """Image and / or text distillation of normalized image features against the teacher's on `texts`."""
    dtype = torch.promote_types(student_images.dtype, torch.float32)   # at least fp32 under autocast
    target = scale * teacher_images.to(dtype) @ texts.to(dtype).t()
    current = scale * student_images.to(dtype) @ texts.to(dtype).t()
    loss = current.new_zeros(())
    if image_loss:
        loss = loss + distillation(target, current, temperature)
    if text_loss:
        loss = loss + distillation(target.t(), current.t(), temperature)
    return loss


def frozen_copy(clip: nn.Module) -> nn.Module:
    """A frozen teacher: a deep copy with no gradients, in eval mode, without gradient checkpointing."""
    teacher = copy.deepcopy(clip)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.set_grad_checkpointing(False)
    return teacher.eval()


@torch.no_grad()
def text_features(clip: nn.Module, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([clip.encode_text(tokens[i:i + batch_size], normalize=True)
                      for i in range(0, len(tokens), batch_size)])


class ImageList(torch.utils.data.Dataset):
    """Images drawn from several splits: item k is row `items[k][1]` of split `sources[items[k][0]]` (name, dataset),
    preprocessed by `transform`; an undecodable one is an `Undecodable` under data.bad_images=skip."""

    def __init__(self, sources: list[tuple[str, object]], items: list[tuple[int, int]], transform, bad_images: str):
        self.sources, self.items, self.transform, self.bad_images = sources, items, transform, bad_images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        source, row = self.items[k]
        name, ds = self.sources[source]
        img = decode(ds[int(row)], name, "train", int(row), self.bad_images)
        return img if isinstance(img, Undecodable) else self.transform(img)


def collate_images(items: list) -> torch.Tensor | None:
    images = [x for x in items if not isinstance(x, Undecodable)]
    return torch.stack(images) if images else None


class StepSlices(torch.utils.data.Sampler):
    """Item indices of each step's reference batch for steps [start, stop), this process's share of it.

    `shuffled`: a seeded permutation per pass (`StepBatches`, keyed by `key`), as a shuffling DataLoader;
    `sequential`: the items in order, cycling, the last batch of a pass shorter (iCaRL's `helpers.batch`)."""

    def __init__(self, n: int, batch_size: int, order: str, *, seed: int, key: str, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        self.n, self.batch, self.order, self.start, self.stop = n, batch_size, order, start, stop
        self.rank, self.world = rank, world
        self.shuffled = StepBatches(n, batch_size, seed, key, start, stop, rank, world) if order == "shuffled" else None

    def batch_for(self, step: int) -> list[int]:
        if self.shuffled is not None:
            return [index for index, _ in self.shuffled.batch_for(step)]
        per_pass = math.ceil(self.n / self.batch)
        first = (step % per_pass) * self.batch
        batch = list(range(first, min(first + self.batch, self.n)))
        share = math.ceil(len(batch) / self.world)
        return batch[self.rank * share:(self.rank + 1) * share]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch_for(step)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class Distilling(FineTune):
    """Full fine-tuning plus distillation of a frozen teacher on reference images (subclasses say which teacher,
    which images and which texts)."""
    teacher_is_start = False   # True: the teacher is the weights the task started from (LwF); else zero-shot CLIP
    order = "shuffled"         # reference batches: shuffled per pass, or in order (iCaRL's exemplars)

    def __init__(self, facts, *, temperature: float = 2.0, image_loss: bool = True, text_loss: bool = True,
                 **finetune):
        super().__init__(facts, **finetune)
        self.temperature, self.image_loss, self.text_loss = temperature, image_loss, text_loss
        self.teacher: nn.Module | None = None
        self.texts: torch.Tensor | None = None
        self._batches = None

    def attach(self, backbone, accelerator, tasks, fresh: bool):
        model = super().attach(backbone, accelerator, tasks, fresh)
        if not self.teacher_is_start:
            self.teacher = frozen_copy(self.clip)   # zero-shot CLIP (a resume loads its weights after this)
        return model

    def reference_texts(self, task) -> list[str]:
        """The texts of the distillation: by default the task's class prompts (first template)."""
        return [p[0] for p in task.prompts(all_templates=False)]

    @abstractmethod
    def reference_set(self, task, ctx: TrainContext) -> ImageList | None:
        """The images reference batches are drawn from in this task (None: no distillation in this task)."""

    def begin_task(self, ctx: TrainContext, optimizer) -> None:
        super().begin_task(ctx, optimizer)
        task = self.tasks[ctx.task]
        images = self.reference_set(task, ctx) if (self.image_loss or self.text_loss) else None
        self._batches = None
        if images is None or len(images) == 0:
            return
        if self.teacher_is_start:   # one copy for the run; what trains is reset to this task's start
            if self.teacher is None:
                self.teacher = frozen_copy(self.clip)
            self.load_weights(self.start, into=self.teacher)
        tokens = self.tokenizer(self.reference_texts(task)).to(self.device)
        self.texts = text_features(self.teacher, tokens, self.facts.eval_batch_size)
        sampler = StepSlices(len(images), self.facts.batch_size, self.order, seed=self.facts.seed,
                             key=f"{self.name}-reference-{ctx.task}", start=ctx.step,
                             stop=self.facts.iterations + int(self.facts.final_step),
                             rank=self.rank, world=self.world)
        loader = torch.utils.data.DataLoader(images, batch_sampler=sampler, collate_fn=collate_images,
                                             num_workers=self.facts.num_workers)
        self._batches = iter(loader)

    def reference_images(self, ctx: TrainContext) -> torch.Tensor | None:
        if self._batches is None:
            return None
        batch = next(self._batches)
        return None if batch is None else batch.to(self.device)

    def regularize(self, loss, ref_images, ref_features, ctx: TrainContext) -> torch.Tensor:
        if ref_images is None:
            return loss
        with torch.no_grad():
            teacher = self.teacher.encode_image(ref_images, normalize=True)
        term = distillation_loss(teacher, ref_features, self.texts, self.clip.logit_scale.exp(), self.temperature,
                                 self.image_loss, self.text_loss)
        self.loss_terms["distill"] = term.detach()
        return loss + term

    def end_task(self, ctx: TrainContext) -> None:
        self._batches = None
