"""Image-folder sources: one sub-folder per class, optional `train/` + `test/` (or `val/`) sub-folders or a
`--split-from` JSON split file; class folders named by class name, the source's own names or label indices."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable

from ...errors import MtilError
from .. import registry
from .archives import ARCHIVE_SUFFIXES
from .base import (
    DEFAULT_SEED,
    DEFAULT_TRAIN_FRACTION,
    TEST_DIRS,
    TRAIN_DIRS,
    Plan,
    _split_items,
)
from .labels import LabelMatcher, clean_classname

log = logging.getLogger(__name__)


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
SKIP_DIRS = {"__MACOSX"}


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


def scan_folder(split_dir: Path) -> tuple[list[tuple[str, str]], int, list[str]]:
    """(class key, image path) of every image under `split_dir`, in ImageFolder order; the number of images lying
    directly in `split_dir` (no class, ignored); and the folders left out, each with why (no images; a link to a
    folder already read). A class key is the image's folder relative to `split_dir` (`cat`, `a/abbey`; a trailing
    `images` component is dropped). Links to folders are followed. A folder with `val_annotations.txt` (Tiny
    ImageNet's val/) takes its labels from that file."""
    ann = split_dir / "val_annotations.txt"
    if ann.is_file():
        items = []
        folder = split_dir / "images" if (split_dir / "images").is_dir() else split_dir
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].strip():
                items.append((parts[1].strip(), str(folder / parts[0].strip())))
        return sorted(items), 0, []
    items, loose, skipped = [], 0, []
    seen = {os.path.realpath(split_dir)}
    for dirpath, dirnames, filenames in os.walk(split_dir, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                skipped.append(f"{os.path.join(dirpath, d)} (a link to a folder already read)")
            else:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        images = sorted(f for f in filenames if _is_image(Path(f)))
        rel = Path(dirpath).relative_to(split_dir).parts
        if not images:
            if rel and not dirnames:
                others = [f for f in filenames if not f.startswith(".")]
                skipped.append(f"{dirpath} (no images{f'; {len(others)} other file(s)' if others else ''})")
            continue
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
    return items, loose, sorted(skipped)


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
    keys = [k for items, _, _ in scanned.values() for k, _ in items]
    if not keys:
        raise MtilError(f"no images in class folders under '{base}'; expected {base}/<class>/<image> or "
                        f"{base}/train/<class>/<image> + {base}/test/<class>/<image>")
    classnames, label_of, ignored = labeler.build(keys, f"--from '{base}'")
    splits = {}
    for split, (items, loose, left_out) in scanned.items():
        if left_out:
            notes.append(f"left out {len(left_out)} folder(s): {'; '.join(left_out[:5])}"
                         + (f"; ... ({len(left_out) - 5} more)" if len(left_out) > 5 else ""))
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
