"""Fake prepared copies of registered datasets: the real class list (so prompts, class counts and routers are those
of the real benchmark), a few tiny seeded images per class. For scale tests and preflight checks that need no
download.

    >>> from mtil.data.fake import fake_prepared
    >>> fake_prepared("data", "SUN397", per_class=2)      # data/SUN397: 397 classes, 794 train + 397 test images
"""
from __future__ import annotations

import os

import numpy as np

from . import prepared, registry


def fake_prepared(root: str | os.PathLike, name: str, per_class: int = 2, test_per_class: int = 1,
                  size: int = 8, seed: int = 0, overwrite: bool = False) -> prepared.SaveResult:
    """Write `ROOT/<name>` for registered dataset `name`: its registry class names in label order,
    `per_class` training and `test_per_class` test images (`size` x `size` RGB, class-coloured noise, the same
    for the same seed) per class. Returns the writer's SaveResult."""
    canon = registry.resolve(name)
    info = registry.get(name)          # one MtilError line for an unknown name
    n = info.num_classes
    rng = np.random.default_rng([seed, n])
    base = rng.integers(0, 256, size=(n, 3))
    splits = {}
    for split, k in (("train", per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(n), k)
        noise = rng.integers(-20, 21, size=(len(labels), size, size, 3))
        images = np.clip(base[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        splits[split] = (images, labels.tolist())
    return prepared.save_prepared(root, canon, splits, info.classnames, overwrite=overwrite)
