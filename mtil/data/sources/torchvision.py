"""The torchvision source: which torchvision dataset (and split arguments) holds each registered dataset (its
catalog file's `sources.torchvision`), found in a local torchvision layout, in the dataset's official files
(`inside`: what its folder holds, whatever it is called; linked into torchvision's nesting, so the rows are
torchvision's), or downloaded; read as (file path / array, label) pairs. Every split's labels are mapped by class
name (torchvision builds some datasets' class lists per split)."""
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
    base: str = ""                  # the folder torchvision reads, under its root (DTD: dtd/dtd)
    inside: tuple[str, ...] = ()    # what that folder holds (the official files); the first is the image folder

    @classmethod
    def from_catalog(cls, spec: dict) -> "TVSpec":
        """The spec of a catalog file's `sources.torchvision` entry."""
        return cls(spec["class"], spec["marker"], spec.get("host", ""), spec.get("train"), spec.get("test"),
                   dict(spec.get("common", {})), spec.get("downloadable", True), spec.get("base", ""),
                   tuple(spec.get("inside", ())))

    def expected(self) -> str:
        """What a copy must hold, in words."""
        if not self.inside:
            return f"torchvision's layout (ROOT/{self.marker})"
        return f"a folder holding {', '.join(self.inside)} (torchvision's ROOT/{self.base})"


def _specs() -> dict[str, TVSpec]:
    """The registered datasets torchvision holds, from their catalog files (splits as in ZSCL / MoE-Adapters)."""
    specs = {name: registry.source_specs(name).get("torchvision") for name in registry.names()}
    return {name: TVSpec.from_catalog(spec) for name, spec in specs.items() if spec}


TORCHVISION = _specs()
LINK_ROOT = "torchvision-root"   # under the work folder: official files linked into torchvision's nesting


def torchvision_root_of(name: str, src: Path, work_dir: Path | None = None) -> Path | None:
    """The torchvision root under which `src` holds dataset `name`: torchvision's own layout (src, its parent or
    grandparent), or the dataset's official files in `src`, its parent or a wrapper folder inside it (then a
    root under `work_dir` links them into torchvision's nesting). None when neither; one MtilError line when a
    folder holds some of the official files only."""
    spec = TORCHVISION.get(registry.resolve(name) or "")
    if spec is None:
        return None
    for root in (src, src.parent, src.parent.parent):
        if (root / spec.marker).exists():
            return root
    if work_dir is None or not spec.inside:
        return None
    for d in _candidates(src):
        have = [x for x in spec.inside if (d / x).exists()]
        if len(have) == len(spec.inside):
            root = work_dir / LINK_ROOT
            link = root / spec.base
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(d.resolve(), target_is_directory=True)
            log.info("%s: official files in %s, read through torchvision as %s", name, d, link)
            return root
        if have and have != list(spec.inside[:1]):
            missing = [x for x in spec.inside if x not in have]
            raise MtilError(f"'{d}' holds part of {registry.resolve(name)}'s files ({', '.join(have)}) but not "
                            f"{', '.join(missing)}; expected {spec.expected()}: complete the copy or re-extract "
                            "the official archive")
    return None


def _candidates(src: Path) -> list[Path]:
    """src, then the wrapper folders inside it (one sub-folder and no files), then its parent."""
    out, d = [src], src
    for _ in range(3):
        if not d.is_dir():
            break
        subs = [p for p in d.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(subs) != 1 or not subs[0].is_dir():
            break
        d = subs[0]
        out.append(d)
    return out + [src.parent]


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
        if "download=True" in msg:   # torchvision's "Dataset not found": its hint names its own option
            raise MtilError(f"torchvision finds no complete {name} under '{root}' ({msg.split('.')[0].strip()}); "
                            f"expected {spec.expected()}: pass that folder to `mtil prepare {name} --root ROOT "
                            "--from DIR`" + (f", or run `mtil prepare {name} --root ROOT` to download it"
                                             if spec.downloadable else "")) from None
        raise MtilError(f"torchvision cannot read {name} under '{root}' ({type(e).__name__}: {msg}); re-extract "
                        "the official files or download them again") from None


def _source_names(ds, name: str) -> dict[int, str] | None:
    """Source label -> class name of a torchvision dataset: its `classes` by position, except OxfordIIITPet, whose
    `classes` lists only the breeds present in the split while its labels are the breed ids (so names come from
    the image files, as torchvision derives them)."""
    if type(ds).__name__ == "OxfordIIITPet" and hasattr(ds, "_images"):
        out = {}
        for path, y in zip(ds._images, ds._labels):
            out.setdefault(int(y), " ".join(p.title() for p in Path(path).stem.rsplit("_", 1)[0].split("_")))
        return out
    classes = getattr(ds, "classes", None) or getattr(ds, "categories", None)
    return {i: str(c) for i, c in enumerate(classes)} if classes else None


def _tv_items(ds, name: str, file_order: str = "sorted") -> tuple[list[tuple[Any, int]], dict[int, str] | None]:
    """(payload, source label) of every sample, reading file paths / arrays directly when torchvision exposes
    them (fast: the encoded files are stored as they are), else decoded PIL images; and the source's class names.
    `file_order` (SUN397, listed in the file system's order by torchvision): `sorted` by path, or `listing` as
    torchvision lists them on this machine."""
    import numpy as np

    classes = _source_names(ds, name)
    if hasattr(ds, "samples") and isinstance(ds.samples, list):                     # ImageFolder (EuroSAT)
        return [(p, int(y)) for p, y in ds.samples], classes
    if hasattr(ds, "_samples"):                                                       # StanfordCars
        return [(str(p), int(y)) for p, y in ds._samples], classes
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    if files is not None and hasattr(ds, "_labels"):
        items = [(str(p), int(y)) for p, y in zip(files, ds._labels)]
        if name == "SUN397" and file_order == "sorted":   # torchvision's order is the file system's
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


def _remap(items, labels: dict[int, int], name: str, split: str, n_source: int):
    """Items with registry labels; a source label without a class name is one MtilError line."""
    def one(p, y):
        if y not in labels:
            raise MtilError(f"{name} split '{split}': label {y} lies outside the {n_source} classes its files list "
                            "(a damaged or mismatched copy); re-extract the official files or download them again")
        return p, labels[y]
    if isinstance(items, list):
        return [one(p, y) for p, y in items]
    return (one(p, y) for p, y in items)


def torchvision_plan(name: str, root: Path, download: bool, data_root: str | os.PathLike,
                     train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED,
                     file_order: str = "sorted") -> Plan:
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
    splits = {}
    parts = {"train": spec.train, "test": spec.test} if spec.train is not None else {"all": {}}
    for split, kwargs in parts.items():
        ds = _tv_dataset(canon, spec, root, download, kwargs)
        items, classes = _tv_items(ds, canon, file_order)
        if classes:   # per split: torchvision builds DTD's and Food101's class lists from each split's files
            labels = matcher.map(list(classes.values()), f"torchvision {spec.cls} classes ({split})")
            remap = dict(zip(classes, labels))
        else:
            log.warning("%s: torchvision gives no class names; using its label order", canon)
            remap = {i: i for i in range(len(matcher.classnames))}
        splits[split] = _remap(items, remap, canon, split, len(classes or remap))
    order = f", files {file_order}" if canon == "SUN397" else ""
    if "all" in splits:
        splits = _split_items(list(splits["all"]), train_fraction, seed)
        how = f"seeded {train_fraction:.0%}/{1 - train_fraction:.0%} train/test split, seed {seed}{order}"
    else:
        how = ", ".join(f"{s}: {', '.join(f'{k}={v}' for k, v in kw.items())}" for s, kw in parts.items())
    return Plan(canon, list(matcher.classnames), splits, f"torchvision {spec.cls} ({root}; {how})")
