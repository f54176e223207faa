"""The torchvision source: which torchvision dataset (and split arguments) holds each registered dataset (its
catalog file's `sources.torchvision`), found in a local torchvision layout or downloaded, read as (file path /
array, label) pairs."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import MtilError
from .. import registry
from . import network
from .base import DEFAULT_SEED, DEFAULT_TRAIN_FRACTION, Plan, _split_items
from .labels import LabelMatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TVSpec:
    """How torchvision holds one dataset (a catalog file's `sources.torchvision` entry)."""
    cls: str
    marker: str                     # path under the torchvision root that shows the dataset is there
    host: str                       # download host (network check)
    train: dict | None = None       # constructor kwargs of the training split (None: one set, seeded split)
    test: dict | None = None
    common: dict = field(default_factory=dict)
    downloadable: bool = True

    @classmethod
    def from_catalog(cls, spec: dict) -> "TVSpec":
        """The spec of a catalog file's `sources.torchvision` entry."""
        return cls(spec["class"], spec["marker"], spec.get("host", ""), spec.get("train"), spec.get("test"),
                   dict(spec.get("common", {})), spec.get("downloadable", True))


def _specs() -> dict[str, TVSpec]:
    """The registered datasets torchvision holds, from their catalog files (splits as in ZSCL / MoE-Adapters)."""
    specs = {name: registry.source_specs(name).get("torchvision") for name in registry.names()}
    return {name: TVSpec.from_catalog(spec) for name, spec in specs.items() if spec}


TORCHVISION = _specs()


def torchvision_root_of(name: str, src: Path) -> Path | None:
    """The torchvision root under which `src` holds dataset `name` in torchvision's layout (src or its parent)."""
    spec = TORCHVISION.get(registry.resolve(name) or "")
    if spec is None:
        return None
    for root in (src, src.parent, src.parent.parent):
        if (root / spec.marker).exists():
            return root
    return None


def _tv_dataset(name: str, spec: TVSpec, root: Path, download: bool, kwargs: dict):
    import torchvision

    cls = getattr(torchvision.datasets, spec.cls)
    try:
        return cls(str(root), download=download, **spec.common, **kwargs)
    except MtilError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if download and (isinstance(e, (OSError, ConnectionError)) or "URL" in msg or "urlopen" in msg):
            raise MtilError(f"downloading {name} with torchvision failed ({msg}); download it yourself and run "
                            f"`mtil prepare {name} --root ROOT --from DIR`") from None
        raise MtilError(f"torchvision cannot read {name} under '{root}' ({type(e).__name__}: {msg})") from None


def _tv_items(ds, name: str) -> tuple[list[tuple[Any, int]], list[str] | None]:
    """(payload, source label) of every sample, reading file paths / arrays directly when torchvision exposes
    them (fast: the encoded files are stored as they are), else decoded PIL images."""
    import numpy as np

    classes = getattr(ds, "classes", None) or getattr(ds, "categories", None)
    if hasattr(ds, "samples") and isinstance(ds.samples, list):                     # ImageFolder (EuroSAT)
        return [(p, int(y)) for p, y in ds.samples], classes
    if hasattr(ds, "_samples"):                                                       # StanfordCars
        return [(str(p), int(y)) for p, y in ds._samples], classes
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    if files is not None and hasattr(ds, "_labels"):
        items = [(str(p), int(y)) for p, y in zip(files, ds._labels)]
        if name == "SUN397":  # torchvision lists SUN397 in file-system order; sort for determinism
            items.sort()
        return items, classes
    if hasattr(ds, "index") and hasattr(ds, "y") and hasattr(ds, "categories"):       # Caltech101
        return [(os.path.join(ds.root, "101_ObjectCategories", ds.categories[y], f"image_{i:04d}.jpg"), int(y))
                for i, y in zip(ds.index, ds.y)], classes
    if hasattr(ds, "data") and hasattr(ds, "targets"):                                # CIFAR, MNIST
        data = np.asarray(ds.data)
        targets = [int(t) for t in (ds.targets.tolist() if hasattr(ds.targets, "tolist") else ds.targets)]
        return [(data[i], targets[i]) for i in range(len(targets))], classes
    log.info("%s: reading samples through torchvision's decoder (slower)", name)
    return _LazyTV(ds), classes


class _LazyTV:
    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        for i in range(len(self.ds)):
            img, y = self.ds[i]
            yield img, int(y)


def _remap(items, labels: list[int] | None):
    if labels is None:
        return items
    if isinstance(items, list):
        return [(p, labels[y]) for p, y in items]
    return ((p, labels[y]) for p, y in items)


def torchvision_plan(name: str, root: Path, download: bool, data_root: str | os.PathLike,
                     train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED) -> Plan:
    canon = registry.resolve(name)
    spec = TORCHVISION[canon]
    if download and not (root / spec.marker).exists():
        if not spec.downloadable:
            raise MtilError(f"torchvision cannot download {canon} (its original URL is gone): get it elsewhere "
                            f"(e.g. `--source hf`) or run `mtil prepare {canon} --root {data_root} --from DIR`")
        if not network.network_available(spec.host):
            raise network.no_network(canon, data_root, f"cannot reach {spec.host} to download it with torchvision")
        log.info("downloading %s with torchvision into %s", canon, root)
    download = download and not (root / spec.marker).exists()
    if download:
        root.mkdir(parents=True, exist_ok=True)
    matcher = LabelMatcher(canon)
    splits, remap = {}, None
    parts = {"train": spec.train, "test": spec.test} if spec.train is not None else {"all": {}}
    for split, kwargs in parts.items():
        ds = _tv_dataset(canon, spec, root, download, kwargs)
        items, classes = _tv_items(ds, canon)
        if remap is None:
            remap = matcher.map([str(c) for c in classes], f"torchvision {spec.cls} classes") if classes else None
            if remap is None and canon != "Flowers102":
                log.warning("%s: torchvision gives no class names; using its label order", canon)
        splits[split] = _remap(items, remap)
    if "all" in splits:
        splits = _split_items(list(splits["all"]), train_fraction, seed)
    return Plan(canon, list(matcher.classnames), splits, f"torchvision {spec.cls} ({root})")
