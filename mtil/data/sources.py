"""Converters from a dataset's usual sources into (image, label) streams for the prepared-format writer.

Sources, in the order `plan()` tries them:
- a local folder or archive (`--from`): a torchvision root holding the dataset in torchvision's layout, or an
  image folder (one sub-folder per class, optionally `train/` + `test/` (or `val/`) sub-folders, optionally
  a `--split-from` JSON split file); an archive (.zip, .tar, .tar.gz, .tgz, ...) is extracted first;
- torchvision (`download=True` only when the dataset is not already in the download folder and a network
  is reachable);
- the Hugging Face hub through `datasets.load_dataset` (honours `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`).

Labels are always mapped by class *name* onto the registry's order (so a source that sorts its classes
differently still lands on the right class); folder names may be the registry's class names, the source's own
names (`AnnualCrop`, `n01443537`, `car_side`, ...), or label indices.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import MtilError
from . import registry

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
TRAIN_DIRS = ("train", "training")
TEST_DIRS = ("test", "testing", "val", "valid", "validation")
SKIP_DIRS = {"__MACOSX"}
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


# ------------------------------------------------------------------------------------------------ name matching
def norm(s: str) -> str:
    """Comparison form of a class name: lower case, punctuation and `_` as single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(s).lower()).split())


def clean_classname(s: str) -> str:
    """A folder / source class name as a prompt-ready class name (`golden_retriever` -> `golden retriever`)."""
    return " ".join(str(s).replace("_", " ").replace("/", " ").split())


class LabelMatcher:
    """Maps source class names (folder paths, torchvision/HF label names) onto a registered dataset's labels."""

    def __init__(self, name: str):
        self.name = registry.resolve(name)
        info = registry.get(self.name)
        self.classnames = info.classnames
        self.keys: dict[str, int] = {}
        sources = registry.source_names(self.name) or []
        aliases = registry.class_aliases(self.name)
        for i, c in enumerate(info.classnames):
            for form in [c, *(sources[i:i + 1]), *aliases.get(c, [])]:
                self.keys.setdefault(norm(form), i)
        self.ignored = {norm(x) for x in registry.ignore_folders(self.name)}

    def candidates(self, source_name: str) -> list[str]:
        """Forms tried for a (possibly nested) source name: the whole path, then shorter and shorter suffixes."""
        parts = [p for p in re.split(r"[\\/]", str(source_name)) if p]
        if len(parts) > 1 and parts[-1].lower() == "images":
            parts = parts[:-1]
        forms = [" ".join(parts[i:]) for i in range(len(parts))]
        if len(parts) > 1:
            forms.append(parts[0])
        return forms or [str(source_name)]

    def is_ignored(self, source_name: str) -> bool:
        return any(norm(f) in self.ignored for f in self.candidates(source_name))

    def match(self, source_name: str) -> int | None:
        for form in self.candidates(source_name):
            i = self.keys.get(norm(form))
            if i is not None:
                return i
        return None

    def map(self, source_names: Sequence[str], what: str, index_base: int = 0) -> list[int]:
        """Registry label of every source name; numeric names are label indices (`index_base` 0 or 1)."""
        out, unmatched = [], []
        n = len(self.classnames)
        for s in source_names:
            i = self.match(s)
            if i is None:
                last = self.candidates(s)[-1] if self.candidates(s) else str(s)
                if str(last).strip().isdigit():
                    i = int(str(last).strip()) - index_base
                    if not 0 <= i < n:
                        hint = "; pass --index-base 1 for 1-based folders" if i == n and index_base == 0 else ""
                        raise MtilError(f"{what}: '{s}' is label index {i}, outside 0..{n - 1} of {self.name}{hint}")
                else:
                    unmatched.append(str(s))
            out.append(i)
        if unmatched:
            examples = ", ".join(f"'{c}'" for c in self.classnames[:3])
            raise MtilError(f"{what}: {len(unmatched)} class name(s) are not {self.name} classes: "
                            f"{', '.join(repr(u) for u in unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}; "
                            f"name class folders by class name ({examples}, ...) or label index")
        return out


# ------------------------------------------------------------------------------------------------------- network
def offline_requested(hf: bool = False) -> bool:
    """True when the environment asks for offline operation: MTIL_OFFLINE for every source, HF_HUB_OFFLINE /
    HF_DATASETS_OFFLINE for the Hugging Face hub (`hf=True`)."""
    names = ("MTIL_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hf else ("MTIL_OFFLINE",)
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in names)


def network_available(host: str, port: int = 443, timeout: float = 3.0, hf: bool = False) -> bool:
    """Whether `host:port` accepts a TCP connection within `timeout` seconds (False when offline is requested)."""
    if offline_requested(hf):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def no_network(name: str, root: str | os.PathLike, what: str) -> MtilError:
    return MtilError(f"no network ({what}): download {name} yourself and run "
                     f"`mtil prepare {name} --root {root} --from DIR`")


# ------------------------------------------------------------------------------------------------------ archives
def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(path: Path, dest: Path) -> Path:
    """Extract a zip/tar archive into `dest` (refusing members that would land outside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s", path)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    _inside(dest, member, path)
                z.extractall(dest)
        else:
            with tarfile.open(path) as t:
                for member in t.getmembers():
                    _inside(dest, member.name, path)
                try:
                    t.extractall(dest, filter="data")
                except TypeError:  # pragma: no cover - Python without extraction filters
                    t.extractall(dest, members=[m for m in t.getmembers() if m.isfile() or m.isdir()])
    except MtilError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise MtilError(f"cannot extract '{path}' ({type(e).__name__}: {e}); check the archive or extract it "
                        "yourself and pass the folder to --from") from None
    return dest


def _inside(dest: Path, member: str, archive: Path) -> None:
    target = (dest / member).resolve()
    if not str(target).startswith(str(dest.resolve())):
        raise MtilError(f"archive '{archive}' has a member outside its folder ({member!r}); extract it yourself")


# ------------------------------------------------------------------------------------------------- seeded splits
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


# --------------------------------------------------------------------------------------------------- image folders
def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_DIRS)


def _has_images(d: Path) -> bool:
    return any(p.is_file() and _is_image(p) for p in d.iterdir())


def _descend(d: Path) -> Path:
    """Skip wrapper folders (a single sub-folder and nothing else of use), as archives often have."""
    for _ in range(8):
        subs = _subdirs(d)
        if len(subs) != 1 or _has_images(d) or subs[0].name.lower() in TRAIN_DIRS + TEST_DIRS:
            return d
        d = subs[0]
    return d


def scan_folder(split_dir: Path) -> tuple[list[tuple[str, str]], int]:
    """(class key, image path) of every image under `split_dir`, in ImageFolder order, and the number of
    images lying directly in `split_dir` (no class, ignored). A class key is the image's folder relative to
    `split_dir` (`cat`, `a/abbey`; a trailing `images` component is dropped). A folder with
    `val_annotations.txt` (Tiny ImageNet's val/) takes its labels from that file."""
    ann = split_dir / "val_annotations.txt"
    if ann.is_file():
        items = []
        folder = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].strip():
                items.append((parts[1].strip(), str(folder / parts[0].strip())))
        return sorted(items), 0
    items, loose = [], 0
    for dirpath, dirnames, filenames in os.walk(split_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        images = sorted(f for f in filenames if _is_image(Path(f)))
        if not images:
            continue
        rel = Path(dirpath).relative_to(split_dir).parts
        if rel and rel[-1].lower() == "images":
            rel = rel[:-1]
        if not rel:
            loose += len(images)
            continue
        key = "/".join(rel)
        items.extend((key, os.path.join(dirpath, f)) for f in images)
    items.sort()
    keys = sorted({k for k, _ in items})
    for outer, inner in zip(keys, keys[1:]):
        if inner.startswith(outer + "/"):
            raise MtilError(f"'{split_dir / inner}' is a sub-folder of the class folder '{split_dir / outer}', "
                            f"which holds images itself: move its images into '{outer}' or into a class folder "
                            f"of its own")
    return items, loose


def _labelled(d: Path) -> bool:
    if (d / "val_annotations.txt").is_file():
        return True
    return any(True for key, _ in scan_folder(d)[0][:1])


def find_split_dirs(d: Path) -> tuple[Path | None, Path | None]:
    """(train dir, labelled test dir) when `d` has such sub-folders (test before val), else (None, None)."""
    by_name = {p.name.lower(): p for p in _subdirs(d)}
    train = next((by_name[n] for n in TRAIN_DIRS if n in by_name), None)
    test = None
    for n in TEST_DIRS:
        if n in by_name and _labelled(by_name[n]):
            test = by_name[n]
            break
        if n in by_name:
            log.info("ignoring %s: its images are not in class folders", by_name[n])
    return train, test


class _Labeler:
    """Class keys -> labels: a registered dataset's matcher, or new class names from the keys."""

    def __init__(self, name: str, index_base: int):
        self.registered = registry.resolve(name) is not None
        self.matcher = LabelMatcher(name) if self.registered else None
        self.index_base = index_base

    def build(self, keys: Iterable[str], what: str) -> tuple[list[str], dict[str, int], set[str]]:
        keys = sorted(set(keys))
        if keys and all(k.isdigit() for k in keys):
            keys.sort(key=int)  # numbered class folders: 1, 2, ..., 10
        if self.registered:
            ignored = {k for k in keys if self.matcher.is_ignored(k)}
            keep = [k for k in keys if k not in ignored]
            labels = self.matcher.map(keep, what, self.index_base)
            return list(self.matcher.classnames), dict(zip(keep, labels)), ignored
        parts = [k.split("/") for k in keys]
        common = 0
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
        names = [clean_classname(" ".join(p[common:])) for p in parts]
        if len(set(names)) != len(names):
            names = [clean_classname(k) for k in keys]
        return names, {k: i for i, k in enumerate(keys)}, set()


def folder_plan(name: str, src: Path, split_from: Path | None = None, index_base: int = 0,
                train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED) -> Plan:
    """Plan for an image folder: class sub-folders, optional train/test sub-folders or a split file."""
    if not src.is_dir():
        raise MtilError(f"--from '{src}' is not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")
    labeler = _Labeler(name, index_base)
    notes: list[str] = []
    if split_from is not None:
        return _split_file_plan(name, src, split_from, labeler, notes)
    base = _descend(src)
    train_dir, test_dir = find_split_dirs(base)
    if train_dir is not None:
        scanned = {"train": scan_folder(train_dir)}
        if test_dir is not None:
            scanned["test"] = scan_folder(test_dir)
            layout = f"{train_dir.name}/ + {test_dir.name}/"
        else:
            layout = f"{train_dir.name}/ (test split: seeded {1 - train_fraction:.0%} of it)"
    else:
        scanned = {"all": scan_folder(base)}
        layout = f"class folders (seeded {train_fraction:.0%}/{1 - train_fraction:.0%} train/test split, seed {seed})"
    keys = [k for items, _ in scanned.values() for k, _ in items]
    if not keys:
        raise MtilError(f"no images in class folders under '{base}'; expected {base}/<class>/<image> or "
                        f"{base}/train/<class>/<image> + {base}/test/<class>/<image>")
    classnames, label_of, ignored = labeler.build(keys, f"--from '{base}'")
    splits = {}
    for split, (items, loose) in scanned.items():
        if loose:
            notes.append(f"{loose} images directly in '{train_dir if split == 'train' and train_dir else base}' "
                         "(no class folder) were ignored")
        n_ignored = sum(1 for k, _ in items if k in ignored)
        if n_ignored:
            notes.append(f"{n_ignored} images in non-class folders ({', '.join(sorted(ignored))}) were ignored")
        splits[split] = [(p, label_of[k]) for k, p in items if k not in ignored]
    if "all" in splits:
        splits = _split_items(splits.pop("all"), train_fraction, seed)
    elif "test" not in splits:
        splits = _split_items(splits["train"], train_fraction, seed)
    return Plan(registry.resolve(name) or name, classnames, splits, f"image folder {src} ({layout})", notes)


def _split_file_plan(name: str, src: Path, split_file: Path, labeler: _Labeler, notes: list[str]) -> Plan:
    """`--split-from FILE`: JSON {"train": [...], "test": [...]} ("val" stands in for a missing "test");
    entries are paths relative to --from, or [path, label, ...] lists (label: an int in the registry's order)."""
    try:
        spec = json.loads(Path(split_file).read_text())
    except FileNotFoundError:
        raise MtilError(f"--split-from '{split_file}' does not exist") from None
    except Exception as e:
        raise MtilError(f"--split-from '{split_file}' is not valid JSON ({type(e).__name__})") from None
    if not isinstance(spec, dict) or "train" not in spec or not ({"test", "val"} & set(spec)):
        raise MtilError(f"--split-from '{split_file}' must be a JSON object with 'train' and 'test' (or 'val') "
                        "lists of image paths relative to --from")
    chosen = {"train": spec["train"], "test": spec["test"] if "test" in spec else spec["val"]}
    entries: dict[str, list[tuple[str, int | None]]] = {}
    for split, rows in chosen.items():
        out = []
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, str):
                out.append((row, None))
            elif isinstance(row, (list, tuple)) and row and isinstance(row[0], str):
                out.append((row[0], int(row[1]) if len(row) > 1 and isinstance(row[1], (int, float)) else None))
            else:
                raise MtilError(f"--split-from '{split_file}': entries must be paths or [path, label, ...] lists")
        entries[split] = out
    keys = {_key_of(p) for rows in entries.values() for p, y in rows if y is None}
    if labeler.registered:
        classnames, label_of, _ = labeler.build(keys, f"--split-from '{split_file}'") if keys else \
            (list(labeler.matcher.classnames), {}, set())
    else:
        if any(y is not None for rows in entries.values() for _, y in rows):
            raise MtilError(f"--split-from '{split_file}': integer labels need a registered dataset; use folder "
                            "names for a new one")
        classnames, label_of, _ = labeler.build(keys, f"--split-from '{split_file}'")
    splits = {}
    for split, rows in entries.items():
        items = []
        for p, y in rows:
            label = y if y is not None else label_of[_key_of(p)]
            if not 0 <= label < len(classnames):
                raise MtilError(f"--split-from '{split_file}': label {label} of '{p}' is outside "
                                f"0..{len(classnames) - 1}")
            items.append((str(src / p), label))
        splits[split] = items
    return Plan(registry.resolve(name) or name, classnames, splits, f"image folder {src} (splits from {split_file})",
                notes)


def _key_of(relpath: str) -> str:
    parts = [p for p in re.split(r"[\\/]", relpath) if p][:-1]
    if parts and parts[-1].lower() == "images":
        parts = parts[:-1]
    return "/".join(parts)


# ---------------------------------------------------------------------------------------------------- torchvision
@dataclass(frozen=True)
class TVSpec:
    cls: str
    marker: str                     # path under the torchvision root that shows the dataset is there
    host: str                       # download host (network check)
    train: dict | None = None       # constructor kwargs of the training split (None: one set, seeded split)
    test: dict | None = None
    common: dict = field(default_factory=dict)
    downloadable: bool = True


# Splits as in ZSCL / MoE-Adapters (the MTIL literature).
TORCHVISION = {
    "Aircraft": TVSpec("FGVCAircraft", "fgvc-aircraft-2013b", "www.robots.ox.ac.uk", {"split": "train"},
                       {"split": "test"}, {"annotation_level": "variant"}),
    "Caltech101": TVSpec("Caltech101", "caltech101/101_ObjectCategories", "data.caltech.edu",
                         common={"target_type": "category"}),
    "CIFAR100": TVSpec("CIFAR100", "cifar-100-python", "www.cs.toronto.edu", {"train": True}, {"train": False}),
    "DTD": TVSpec("DTD", "dtd/dtd", "www.robots.ox.ac.uk", {"split": "train"}, {"split": "test"}),
    "EuroSAT": TVSpec("EuroSAT", "eurosat/2750", "huggingface.co"),
    "Flowers102": TVSpec("Flowers102", "flowers-102/jpg", "www.robots.ox.ac.uk", {"split": "train"},
                         {"split": "test"}),
    "Food101": TVSpec("Food101", "food-101/meta", "data.vision.ee.ethz.ch", {"split": "train"}, {"split": "test"}),
    "MNIST": TVSpec("MNIST", "MNIST/raw", "ossci-datasets.s3.amazonaws.com", {"train": True}, {"train": False}),
    "OxfordPet": TVSpec("OxfordIIITPet", "oxford-iiit-pet/annotations", "www.robots.ox.ac.uk",
                        {"split": "trainval"}, {"split": "test"}),
    "StanfordCars": TVSpec("StanfordCars", "stanford_cars/devkit", "", {"split": "train"}, {"split": "test"},
                           downloadable=False),
    "SUN397": TVSpec("SUN397", "SUN397/ClassName.txt", "vision.princeton.edu"),
}

# Default Hugging Face hub repositories (any other: --hf REPO). Labels are matched by name.
HF_REPOS = {
    "Aircraft": "HuggingFaceM4/FGVC-Aircraft",
    "CIFAR100": "uoft-cs/cifar100",
    "DTD": "tanganke/dtd",
    "EuroSAT": "tanganke/eurosat",
    "Flowers102": "dpdl-benchmark/oxford_flowers102",
    "Food101": "ethz/food101",
    "MNIST": "ylecun/mnist",
    "OxfordPet": "timm/oxford-iiit-pet",
    "StanfordCars": "tanganke/stanford_cars",
    "SUN397": "tanganke/sun397",
    "TinyImageNet": "zh-plus/tiny-imagenet",
}
# Label columns tried first, per dataset (then `label`, `fine_label`, then the first ClassLabel column).
HF_LABEL_COLUMNS = {"Aircraft": ("variant",), "CIFAR100": ("fine_label",)}


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
        if not network_available(spec.host):
            raise no_network(canon, data_root, f"cannot reach {spec.host} to download it with torchvision")
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


# --------------------------------------------------------------------------------------------- Hugging Face hub
def _hf_columns(ds, canon: str | None) -> tuple[str, str]:
    import datasets

    feats = ds.features
    image_cols = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
    if not image_cols:
        raise MtilError(f"the HF dataset has no image column (columns: {', '.join(feats)})")
    preferred = (*HF_LABEL_COLUMNS.get(canon or "", ()), "label", "labels", "fine_label")
    label = next((c for c in preferred if c in feats), None)
    if label is None:
        label = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is None:
        raise MtilError(f"the HF dataset has no label column (columns: {', '.join(feats)}); expected 'label'")
    return image_cols[0], label


class _HFItems:
    """Streams (undecoded image dict, label) pairs out of an HF split."""

    def __init__(self, ds, image_col: str, label_col: str, remap: list[int] | None):
        import datasets
        self.ds = ds.select_columns([image_col, label_col]).cast_column(image_col, datasets.Image(decode=False))
        self.image_col, self.label_col, self.remap = image_col, label_col, remap

    def __len__(self) -> int:
        return len(self.ds)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        for row in self.ds:
            y = int(row[self.label_col])
            yield row[self.image_col], (self.remap[y] if self.remap is not None else y)


def hf_plan(name: str, repo: str | None, data_root: str | os.PathLike, cache_dir: str | None = None,
            config: str | None = None, train_fraction: float = DEFAULT_TRAIN_FRACTION,
            seed: int = DEFAULT_SEED) -> Plan:
    import datasets

    canon = registry.resolve(name)
    repo = repo or HF_REPOS.get(canon or "")
    if repo is None:
        raise MtilError(f"no default Hugging Face repository for {name}; pass --hf OWNER/NAME, or run "
                        f"`mtil prepare {name} --root {data_root} --from DIR`")
    offline = offline_requested(hf=True)
    if not offline and not network_available("huggingface.co", hf=True):
        raise no_network(canon or name, data_root, "cannot reach huggingface.co")
    try:
        dd = datasets.load_dataset(repo, config, cache_dir=cache_dir)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if offline:
            raise MtilError(f"no network (HF_HUB_OFFLINE is set and '{repo}' is not in the local cache): download "
                            f"{canon or name} yourself and run `mtil prepare {canon or name} --root {data_root} "
                            "--from DIR`") from None
        raise MtilError(f"cannot load '{repo}' from the Hugging Face hub ({type(e).__name__}: {msg})") from None
    names = {s.lower(): s for s in dd}
    train = next((names[n] for n in TRAIN_DIRS if n in names), None)
    test = next((names[n] for n in TEST_DIRS if n in names), None)
    if train is None:
        raise MtilError(f"'{repo}' has no train split (splits: {', '.join(dd)})")
    image_col, label_col = _hf_columns(dd[train], canon)
    label_feat = dd[train].features[label_col]
    source_names = list(getattr(label_feat, "names", []) or [])
    if canon is not None:
        matcher = LabelMatcher(canon)
        classnames = list(matcher.classnames)
        if source_names:
            remap = matcher.map(source_names, f"'{repo}' label names")
        else:
            log.warning("%s: '%s' has no label names; assuming the registry's label order", canon, repo)
            remap = None
    else:
        if not source_names:
            raise MtilError(f"'{repo}' has no label names; a new dataset needs them (ClassLabel names)")
        classnames, remap = [clean_classname(s) for s in source_names], None
    splits = {"train": _HFItems(dd[train], image_col, label_col, remap)}
    if test is not None:
        splits["test"] = _HFItems(dd[test], image_col, label_col, remap)
    else:
        splits = _split_items(list(splits["train"]), train_fraction, seed)
    return Plan(canon or name, classnames, splits, f"Hugging Face {repo} ({train} + {test or 'seeded split'})")


# ------------------------------------------------------------------------------------------------------- planning
SOURCES = ("auto", "folder", "torchvision", "hf")


def default_source(name: str) -> str:
    """The source `mtil prepare NAME` uses without --from / --source."""
    canon = registry.resolve(name)
    if canon in TORCHVISION and TORCHVISION[canon].downloadable:
        return "torchvision"
    if canon in HF_REPOS:
        return "hf"
    return "folder"


def plan(name: str, data_root: str | os.PathLike, work_dir: Path, *, src: str | os.PathLike | None = None,
         source: str = "auto", split_from: str | os.PathLike | None = None, download_dir: str | None = None,
         hf_repo: str | None = None, hf_config: str | None = None, cache_dir: str | None = None,
         index_base: int = 0, train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED) -> Plan:
    """Choose the source of dataset `name` and return its plan (see the module docstring)."""
    canon = registry.resolve(name)
    if source not in SOURCES:
        raise MtilError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    if source == "auto":
        source = "folder" if src is not None else ("hf" if hf_repo else default_source(name))
    if source in ("torchvision", "hf") and canon is None and not (source == "hf" and hf_repo):
        raise MtilError(f"'{name}' is not a registered dataset ({', '.join(registry.names())}); prepare it from "
                        f"an image folder with `mtil prepare {name} --root {data_root} --from DIR`")
    if source == "folder":
        if src is None:
            raise MtilError(f"{name} has no download source; run `mtil prepare {name} --root {data_root} --from DIR` "
                            "with DIR holding one sub-folder of images per class")
        path = Path(src).expanduser()
        if not path.exists():
            raise MtilError(f"--from '{path}' does not exist")
        if is_archive(path):
            path = extract_archive(path, work_dir / "extracted")
        if canon is not None and split_from is None:
            tv_root = torchvision_root_of(canon, path)
            if tv_root is not None:
                log.info("%s: found torchvision's layout under %s", canon, tv_root)
                return torchvision_plan(canon, tv_root, False, data_root, train_fraction, seed)
        return folder_plan(name, path, Path(split_from) if split_from else None, index_base, train_fraction, seed)
    if source == "torchvision":
        if canon not in TORCHVISION:
            raise MtilError(f"torchvision has no {canon}; use --source hf or --from DIR")
        root = Path(download_dir).expanduser() if download_dir else Path(data_root) / ".downloads"
        if src is not None:
            found = torchvision_root_of(canon, Path(src).expanduser())
            if found is None:
                raise MtilError(f"'{src}' does not hold {canon} in torchvision's layout "
                                f"(no {TORCHVISION[canon].marker})")
            root = found
        return torchvision_plan(canon, root, True, data_root, train_fraction, seed)
    return hf_plan(canon or name, hf_repo, data_root, cache_dir, hf_config, train_fraction, seed)
