"""From prepared datasets to torch batches, deterministically.

The training batch of step s of task t is a pure function of (seed, t, s): the sample order is a seeded
permutation per epoch, and each sample's augmentation runs under its own seed inside a forked RNG (the global
torch RNG, which router noise and dropout use, is never touched). So an interrupted run that resumes at step s
sees exactly the batches an uninterrupted run sees, whatever the number of loader workers. With several
processes each takes its slice of the global batch.

Undecodable images: `data.bad_images: fail` stops with one line naming the dataset and index (re-prepare it);
`skip` drops the sample from its batch; the loaders report each skipped image with its batch, and the main
process counts them (`Skipped`: loader workers are separate processes, so a count kept there would be lost).
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import MtilError
from . import prepared
from .prepared.encode import NoKnownRange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undecodable:
    """What a loader item is for an image that cannot be decoded under data.bad_images=skip."""
    dataset: str
    split: str
    index: int
    error: str


class Skipped(Counter):
    """(dataset, split) -> distinct undecodable images skipped (an image drawn again counts once), counted in the
    main process from what each batch reports."""

    def __init__(self):
        super().__init__()
        self.indices: dict[tuple[str, str], set[int]] = {}

    def add(self, dataset: str, split: str, index: int) -> bool:
        """Count image `index`; True the first time it is seen."""
        seen = self.indices.setdefault((dataset, split), set())
        if index in seen:
            return False
        seen.add(index)
        self[(dataset, split)] += 1
        return True

    def batches(self, loader):
        """The batches of `loader` (None where every image of one was skipped), counting the images each skipped
        and logging an image the first time."""
        for batch, skipped in loader:
            for bad in skipped:
                if self.add(bad.dataset, bad.split, bad.index):
                    log.warning("image %d of %s/%s cannot be decoded (%s); skipped (data.bad_images=skip)",
                                bad.index, bad.dataset, bad.split, bad.error)
            yield batch


def seed_for(*parts) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


@dataclass
class TaskData:
    name: str
    classnames: list[str]
    templates: list[str]
    train: object          # datasets.Dataset with undecoded `image` column
    test: object
    fingerprint: dict = field(default_factory=dict)   # what mtil prepare recorded (prepared.read_fingerprint)

    def prompts(self, all_templates: bool) -> list[list[str]]:
        """Per class, its prompts: the first template (training) or every template (evaluation)."""
        templates = self.templates if all_templates else self.templates[:1]
        return [[t.format(c) for t in templates] for c in self.classnames]


def _undecoded(ds):
    import datasets
    return ds.cast_column("image", datasets.Image(decode=False))


def few_shot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k indices per class (all of a class when it has fewer), chosen with a seeded generator, sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def load_task(data_cfg, name: str, seed: int) -> TaskData:
    """Load one prepared dataset (train + test), checked against what mtil prepare recorded, with the class names
    of `data.class_names`, and apply few-shot, evaluation and smoke-test caps from the config (data.max_classes,
    data.max_templates: each a named key that the run's config records, for runs of the real architecture on a
    CPU)."""
    info = prepared.load_info(data_cfg.root, name, data_cfg.class_names)
    train = _undecoded(prepared.load_split(data_cfg.root, name, "train"))
    test = _undecoded(prepared.load_split(data_cfg.root, name, "test"))
    prepared.check_consistent(data_cfg.root, name, info.classnames, {"train": train, "test": test})
    fingerprint = prepared.read_fingerprint(data_cfg.root, name)
    if data_cfg.few_shot:
        labels = np.asarray(train["label"])
        train = train.select(few_shot_indices(labels, int(data_cfg.few_shot), seed_for(seed, name, "few-shot")))
    classnames, templates = list(info.classnames), list(info.templates)
    if data_cfg.max_classes is not None and data_cfg.max_classes < len(classnames):   # a smoke-test cap (recorded)
        n = int(data_cfg.max_classes)
        classnames = classnames[:n]
        train, test = (ds.select(np.flatnonzero(np.asarray(ds["label"]) < n)) for ds in (train, test))
    if data_cfg.max_templates is not None:
        templates = templates[:int(data_cfg.max_templates)]
    cap = data_cfg.max_eval_per_dataset
    if cap is not None and len(test) > cap:
        rng = np.random.default_rng(seed_for(seed, name, "eval-cap"))
        test = test.select(np.sort(rng.permutation(len(test))[:cap]))
    return TaskData(info.name if hasattr(info, "name") else name, classnames, templates, train, test, fingerprint)


def decode(record, dataset: str, split: str, index: int, bad_images: str) -> Image.Image | Undecodable:
    image = record["image"]
    try:
        if image.get("bytes") is not None:
            img = Image.open(io.BytesIO(image["bytes"]))
        else:
            img = Image.open(image["path"])
        return prepared.to_rgb8(img)
    except Exception as e:  # PIL raises many types for broken files
        why = str(e) if isinstance(e, NoKnownRange) else type(e).__name__
        if bad_images == "skip":
            return Undecodable(dataset, split, index, why)
        raise MtilError(f"image {index} of {dataset}/{split} cannot be decoded ({why}); re-run "
                        f"`mtil prepare {dataset}` or set data.bad_images=skip to skip and count such images") from None


class ImageSet(torch.utils.data.Dataset):
    """Indexable by `(index, aug_seed)` (training: yields image, label) or `index` (evaluation: image, label, index);
    an `Undecodable` for a skipped image."""

    def __init__(self, ds, transform: Callable, name: str, split: str, bad_images: str):
        self.ds, self.transform, self.name, self.split, self.bad_images = ds, transform, name, split, bad_images

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key):
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        record = self.ds[int(index)]
        img = decode(record, self.name, self.split, int(index), self.bad_images)
        if isinstance(img, Undecodable):
            return img
        if aug_seed is None:
            return self.transform(img), int(record["label"]), int(index)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(aug_seed)  # CPU only: torch.manual_seed would also
            # queue a lazy CUDA seeding (with a stack trace) on every sample of a CUDA build
            return self.transform(img), int(record["label"])


def collate(items):
    """(stacked (image, label[, index]) items or None if every item was skipped, the `Undecodable` items)."""
    skipped = [x for x in items if isinstance(x, Undecodable)]
    items = [x for x in items if not isinstance(x, Undecodable)]
    if not items:
        return None, skipped
    return (torch.stack([x[0] for x in items]),) + tuple(torch.tensor([x[i] for x in items])
                                                         for i in range(1, len(items[0]))), skipped


class StepBatches(torch.utils.data.Sampler):
    """Batches of `(index, aug_seed)` for steps [start, stop): a pure function of (seed, task, step)."""

    def __init__(self, n: int, batch_size: int, seed: int, task: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if n == 0:
            raise MtilError("a training split is empty; re-prepare the dataset")
        if batch_size % world:
            raise MtilError(f"train.batch_size={batch_size} must be divisible by the number of processes ({world})")
        self.n, self.batch, self.seed, self.task = n, batch_size, seed, task
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(seed_for(self.seed, self.task, "epoch", epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def batch_for(self, step: int) -> list[tuple[int, int]]:
        per_rank = self.batch // self.world
        out = []
        for i in range(self.rank * per_rank, (self.rank + 1) * per_rank):
            position = step * self.batch + i
            index = int(self._perm(position // self.n)[position % self.n])
            out.append((index, seed_for(self.seed, self.task, "aug", step, i)))
        return out

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch_for(step)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def train_loader(task: TaskData, transform, *, seed: int, task_index: int, start: int, stop: int, batch_size: int,
                 rank: int, world: int, workers: int, bad_images: str) -> torch.utils.data.DataLoader:
    """Each step's batch as (batch or None, skipped); `Skipped.batches` turns it into batches and a count."""
    sampler = StepBatches(len(task.train), batch_size, seed, task_index, start, stop, rank, world)
    return torch.utils.data.DataLoader(ImageSet(task.train, transform, task.name, "train", bad_images),
                                       batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed_for(seed, task_index)),
                                       persistent_workers=False)


def eval_loader(ds, transform, name: str, split: str, batch_size: int, workers: int, bad_images: str):
    """Batches over a split in order, yielding ((images, labels, indices), skipped) so skipped images keep alignment."""
    return torch.utils.data.DataLoader(ImageSet(ds, transform, name, split, bad_images), batch_size=batch_size,
                                       shuffle=False, num_workers=workers, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(0))  # keeps the global RNG untouched
