"""The chunked continual stream: examples split into disjoint chunks; at chunk c batches come from chunks 1..c."""
from __future__ import annotations

import random

import numpy as np
import torch

from ..errors import MtilError


class ChunkStream:
    """Seeded split of `num_examples` indices (optionally a random subset of `keep`) into `chunks` disjoint chunks,
    after setting aside `probe` held-out examples (`self.probe`, never trained on) for the diagnostics.

    Chunks are numbered from 1. Earlier chunks are retained, as in the reference (its buffer holds the whole
    dataset): `batches(c, n, generator)` walks the union of chunks 1..c in reshuffled epochs of batches of n (the
    last batch of an epoch may be smaller), like the reference's shuffling DataLoader; `sample` draws uniformly.
    With `pool=True` every chunk is the whole kept set (a fixed pool; what changes between chunks are the labels).
    """

    def __init__(self, num_examples: int, chunks: int, seed: int, keep: int | None = None, probe: int = 0,
                 pool: bool = False):
        if chunks < 1:
            raise MtilError(f"study.chunks must be at least 1, got {chunks}")
        order = np.random.default_rng(seed).permutation(num_examples)
        if (keep or 0) + probe > num_examples:
            raise MtilError(f"data.max_examples ({keep}) + diagnostics.probe_size ({probe}) exceed the "
                            f"{num_examples} examples; lower one of them")
        self.probe = torch.from_numpy(order[num_examples - probe:].copy())  # from the end: `keep` is unchanged
        order = order[:num_examples - probe]
        if keep is not None:
            order = order[:keep]
        if len(order) < chunks:
            raise MtilError(f"{len(order)} examples cannot fill {chunks} chunks; lower study.chunks")
        if pool:
            self.chunks = [torch.from_numpy(order.copy())] * chunks
            self._seen = list(self.chunks)
        else:
            self.chunks = [torch.from_numpy(part.copy()) for part in np.array_split(order, chunks)]
            self._seen = [torch.cat(self.chunks[:c]) for c in range(1, chunks + 1)]

    def __len__(self) -> int:
        return len(self.chunks)

    def seen(self, c: int) -> torch.Tensor:
        """Indices of chunks 1..c."""
        return self._seen[c - 1]

    def batches(self, c: int, n: int, generator: torch.Generator):
        """Endless index batches over chunks 1..c: each epoch is a fresh permutation split into batches of n."""
        pool = self._seen[c - 1]
        while True:
            yield from pool[torch.randperm(len(pool), generator=generator)].split(n)

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        pool = self._seen[c - 1]
        return pool[torch.randint(len(pool), (n,), generator=generator)]


def noisy_labels(labels: torch.Tensor, fraction: float, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of `labels` where a seeded `fraction` of examples get a fixed uniformly random label."""
    if not 0.0 <= fraction <= 1.0:
        raise MtilError(f"data.label_noise must lie in [0, 1], got {fraction}")
    out = labels.clone()
    rng = np.random.default_rng([seed, 1])
    which = rng.permutation(len(labels))[: int(round(fraction * len(labels)))]
    out[torch.from_numpy(which)] = torch.from_numpy(rng.integers(0, num_classes, len(which)))
    return out


def redraw_labels(labels: torch.Tensor, seen: torch.Tensor, fraction: float, num_classes: int,
                  rng: random.Random) -> torch.Tensor:
    """The reference's per-task label noise (grow_rl_synthetic `PartialImageFolder`): of the n examples `seen`
    (the task's dataset, retained ones first), `int(n * fraction)` positions drawn by `rng.sample` get a label drawn
    uniformly among the `num_classes - 1` labels other than their own; returns a copy of `labels` (all examples)
    with those entries changed. Called once per chunk with one `rng` per run, it re-draws the noise every chunk."""
    if not 0.0 <= fraction <= 1.0:
        raise MtilError(f"data.label_noise must lie in [0, 1], got {fraction}")
    out = labels.clone()
    own = labels[seen].tolist()
    for pos in rng.sample(range(len(own)), int(len(own) * fraction)):
        j = rng.randrange(num_classes - 1)  # = rng.choice([l for l in range(num_classes) if l != own]), cheaper
        out[seen[pos]] = j + (j >= own[pos])
    return out
