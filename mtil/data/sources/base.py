"""What every source returns (a `Plan`: per split an iterable of (payload, label)) and the seeded train/test
split used where a source has no test split."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import MtilError

TRAIN_DIRS = ("train", "training")
TEST_DIRS = ("test", "testing", "val", "valid", "validation")
DEFAULT_SEED = 42
DEFAULT_TRAIN_FRACTION = 0.8


@dataclass
class Plan:
    """What a source yields: per split an iterable of (payload, label) in the registry's label order."""
    name: str
    classnames: list[str]
    splits: dict[str, Any]
    description: str
    notes: list[str] = field(default_factory=list)


def seeded_split(n: int, train_fraction: float = DEFAULT_TRAIN_FRACTION,
                 seed: int = DEFAULT_SEED) -> tuple[list[int], list[int]]:
    """Train / test indices of n items: a seeded permutation, the first int(train_fraction * n) for training.

    The same permutation as `torch.utils.data.random_split(ds, [int(0.8 n), n - int(0.8 n)],
    generator=torch.Generator().manual_seed(42))`, which is how ZSCL splits Caltech101, EuroSAT and SUN397.
    """
    import torch

    if not 0.0 < train_fraction < 1.0:
        raise MtilError(f"--train-fraction must be between 0 and 1, not {train_fraction}")
    n_train = int(train_fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return perm[:n_train], perm[n_train:]


def _split_items(items: list, train_fraction: float, seed: int) -> dict[str, list]:
    tr, te = seeded_split(len(items), train_fraction, seed)
    return {"train": [items[i] for i in tr], "test": [items[i] for i in te]}
