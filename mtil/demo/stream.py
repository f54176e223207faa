"""The demo's task stream (`build_stream(root, seed)`: every domain's train / test split in mtil's prepared format)
and its pre-training mixture (`pretrain_mixture(seed, n)`: fresh image-caption pairs for
`mtil.demo.pretrain.pretrain_clip`), both drawn by `mtil.demo.domains` from disjoint random streams; the mixture is
also the demo's reference set for the distillation baselines (`build_reference`)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..data.prepared import save_prepared
from ..data.reference import save_reference
from ..errors import MtilError
from .domains import DOMAINS, SIZE, _domains, _rng, default_section

log = logging.getLogger(__name__)


def _balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def domain_splits(name: str, seed: int, train_per_class: int, test_per_class: int) -> dict[str, tuple]:
    """{'train': (images, labels), 'test': (images, labels)} of one stream domain (not written)."""
    dom = _domains([name])[0]
    out = {}
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        rng = _rng(seed, name, part)
        labels = _balanced_labels(len(dom.classnames), per_class, rng)
        images, _ = dom.render(labels, part, rng)
        out[part] = (images, labels)
    return out


def build_stream(root: str | os.PathLike, seed: int, cfg: Mapping | None = None) -> list[str]:
    """Write every demo domain under `root` in the prepared format; return the domain names in stream order.

    `cfg` is the `demo:` config section (`domains`, `train_per_class`, `test_per_class`); None = defaults.
    Same seed -> identical images and labels.
    """
    cfg = default_section() if cfg is None else cfg
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = [d.name for d in _domains(cfg["domains"])]
    for name in names:
        dom = DOMAINS[name]
        splits = domain_splits(name, seed, int(cfg["train_per_class"]), int(cfg["test_per_class"]))
        save_prepared(root, name, splits, list(dom.classnames), templates=list(dom.templates), overwrite=True)
        log.info("demo domain %s: %d classes, %d train / %d test images", name, len(dom.classnames),
                 len(splits["train"][1]), len(splits["test"][1]))
    return names


def pretrain_mixture(seed: int, n_per_domain: int | Mapping[str, int], domains: Sequence[str] | None = None,
                     captions_per_domain: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Fresh image-caption pairs of every demo domain, disjoint from the stream's train/test instances.

    `n_per_domain`: images per domain, one number or {domain: number}.
    Returns (uint8 [N, 32, 32, 3], N captions), shuffled. Captions come from each domain's own caption
    templates (optionally only the first `captions_per_domain`), filled with the class name and the image's
    attributes (colours, letter case).
    """
    doms = _domains(domains)
    uncaptioned = [d.name for d in doms if not d.captions]
    if uncaptioned:
        raise MtilError(f"demo domain(s) {', '.join(uncaptioned)} have no pre-training captions (stream-only "
                        f"vocabularies); remove them from demo.pretrain.domains")
    rng = np.random.default_rng([int(seed), 0x5EED])
    images, captions = [], []
    for dom in doms:
        n = int(n_per_domain[dom.name] if isinstance(n_per_domain, Mapping) else n_per_domain)
        drng = _rng(seed, dom.name, "pretrain")
        labels = drng.integers(0, len(dom.classnames), n)
        imgs, attrs = dom.render(labels, "pretrain", drng)
        templates = dom.captions[:captions_per_domain] if captions_per_domain else dom.captions
        choice = drng.integers(0, len(templates), n)
        captions += [templates[t].format(dom.classnames[lab], **a) for t, lab, a in zip(choice, labels, attrs)]
        images.append(imgs)
    images = np.concatenate(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    order = rng.permutation(len(captions))
    log.info("pre-training mixture: %d images of %d domains, %d distinct captions", len(order), len(doms),
             len(set(captions)))
    return images[order], [captions[i] for i in order]


def build_reference(root: str | os.PathLike, name: str, seed: int, sizes: Mapping[str, int], domains: Sequence[str],
                    captions_per_domain: int | None = None) -> dict:
    """Write the pre-training mixture as reference set `name` under `root` (`mtil.data.reference`): its images, and
    its distinct captions (sorted) as the reference sentences. Disjoint from the stream, as ZSCL's ImageNet images
    and Conceptual Captions sentences are from MTIL's datasets."""
    images, captions = pretrain_mixture(seed, sizes, domains, captions_per_domain)
    return save_reference(root, name, list(images), sorted(set(captions)), overwrite=True,
                          source=f"the demo's pre-training mixture (seed {seed})")
