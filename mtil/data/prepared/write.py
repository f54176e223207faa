"""The two writers of the prepared format: `write_items` ((image, label) streams into a staging folder, as
`mtil prepare` does) and `save_prepared` (in-memory splits or `datasets.Dataset`s, staged and committed)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ...errors import MtilError
from . import encode, fingerprint
from .checks import check_writer_inputs
from .layout import FORMAT_VERSION, META_FILE, TEMPLATES_FILE, _features
from .lock import Staging, staging

log = logging.getLogger(__name__)

_SHOW_SKIPPED = 20  # skipped images logged one by one (the rest are only counted)


@dataclass
class SaveResult:
    """What a write produced: where, how many rows per split, and what was skipped."""
    name: str
    path: Path
    num_classes: int
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)            # undecodable / unreadable images
    skipped_examples: list[str] = field(default_factory=list)        # "path: reason", the first few
    capped: dict[str, int] = field(default_factory=dict)             # left out by max_per_class
    seconds: float = 0.0

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def _describe(payload: Any, index: int) -> str:
    if isinstance(payload, (str, os.PathLike)):
        return str(payload)
    if isinstance(payload, dict) and payload.get("path"):
        return str(payload["path"])
    return f"#{index}"


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", text)[:120]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _SplitWriter:
    """Turns (payload, label) items into prepared rows: checks decoding, caps per class, counts what it skips."""

    def __init__(self, split: str, classnames: Sequence[str], max_per_class: int | None, result: SaveResult):
        self.split, self.classnames, self.max_per_class, self.result = split, classnames, max_per_class, result
        self.num_classes = len(classnames)
        self.per_class: Counter = Counter()
        self.rows = self.skipped = self.capped = 0

    def rows_of(self, items: Iterable[tuple[Any, int]]) -> Iterator[dict]:
        t0 = time.time()
        for i, item in enumerate(items):
            try:
                payload, label = item
                label = int(label)
            except Exception:
                raise MtilError(f"split {self.split}: item {i} is not an (image, label) pair") from None
            if not 0 <= label < self.num_classes:
                raise MtilError(f"split {self.split}: label {label} of item {i} is outside 0..{self.num_classes - 1}")
            if self.max_per_class is not None and self.per_class[label] >= self.max_per_class:
                self.capped += 1
                continue
            try:
                cell, needs_check = encode.to_image_cell(payload)
                if needs_check:
                    encode.check_decodes(cell["bytes"])
            except MtilError:
                raise
            except Exception as e:  # PIL and OSError raise many types for broken files
                self.skipped += 1
                where = _describe(payload, i)
                reason = _reason(e)
                if len(self.result.skipped_examples) < _SHOW_SKIPPED:
                    self.result.skipped_examples.append(f"{where} ({reason})")
                    log.warning("%s/%s: skipping undecodable image %s (%s)", self.result.name, self.split, where,
                                reason)
                else:
                    log.debug("%s/%s: skipping undecodable image %s (%s)", self.result.name, self.split, where,
                              reason)
                continue
            self.per_class[label] += 1
            self.rows += 1
            if self.rows % 5000 == 0:
                log.info("%s/%s: %d images written (%.0f/s)", self.result.name, self.split, self.rows,
                         self.rows / max(time.time() - t0, 1e-6))
            yield {"image": cell, "label": label}

    def finish(self) -> None:
        self.result.rows[self.split] = self.rows
        self.result.skipped[self.split] = self.skipped
        if self.capped:
            self.result.capped[self.split] = self.capped
        if self.rows == 0:
            extra = f" ({self.skipped} undecodable images skipped)" if self.skipped else ""
            raise MtilError(f"{self.result.name}: split '{self.split}' has no images{extra}; nothing was written")
        if self.split == "train":
            _refuse_empty_classes(self.result.name, set(self.per_class), self.num_classes, self.classnames)


def _refuse_empty_classes(name: str, present: set, num_classes: int, classnames: Sequence[str]) -> None:
    """A class without a training image is refused at writing (every run would refuse the dataset)."""
    empty = [classnames[c] for c in range(num_classes) if c not in present]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (" ..." if len(empty) > 5 else "")
        raise MtilError(f"{name}: {len(empty)} class(es) have no training image ({shown}); add images or leave the "
                        "class out; nothing was written")


@contextlib.contextmanager
def _quiet_progress():
    """No `datasets` progress bars while writing (library code does not print)."""
    import datasets
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def write_items(st: Staging, splits: Mapping[str, Iterable[tuple[Any, int]]], classnames: Sequence[str],
                templates: Sequence[str] | None = None, max_per_class: int | None = None,
                source: str | None = None, extra_meta: Mapping | None = None) -> SaveResult:
    """Write (payload, label) streams as the splits of `st` (not yet committed); returns the counts.

    Each split streams to an arrow file (constant memory), then the DatasetDict is saved into `st.tmp`.
    """
    classnames, templates = check_writer_inputs(st.name, splits, classnames, templates)
    return _write_rows(st, splits, classnames, templates, max_per_class, source, extra_meta)


def _write_rows(st: Staging, splits: Mapping[str, Iterable[tuple[Any, int]]], classnames: list[str],
                templates: list[str] | None, max_per_class: int | None, source: str | None,
                extra_meta: Mapping | None) -> SaveResult:
    """`write_items` on inputs already checked."""
    import datasets

    features = _features(classnames)
    result = SaveResult(st.name, st.final, len(classnames))
    t0 = time.time()
    built = {}
    with _quiet_progress():
        for split, items in splits.items():
            writer = _SplitWriter(split, classnames, max_per_class, result)
            if _in_memory(items):
                rows = list(writer.rows_of(items))
                writer.finish()
                built[split] = datasets.Dataset.from_dict(
                    {"image": [r["image"] for r in rows], "label": [r["label"] for r in rows]}, features=features)
            else:
                def gen(_w=writer, _items=items):
                    yield from _w.rows_of(_items)
                try:
                    built[split] = datasets.Dataset.from_generator(
                        gen, features=features, cache_dir=str(st.work / "cache"), fingerprint=uuid.uuid4().hex,
                        split=datasets.NamedSplit(split))
                except MtilError:
                    raise
                except Exception:
                    if writer.rows == 0:
                        writer.finish()  # no rows at all: say so in one line
                    raise
                writer.finish()
        _save(st, built, classnames, templates, result, source, extra_meta, t0)
    return result


def _in_memory(items) -> bool:
    """Small lists of in-memory images are built in one go; files and long streams are streamed to disk."""
    if not isinstance(items, (list, tuple)) or len(items) > 20000:
        return False
    return not any(isinstance(it[0], (str, os.PathLike)) for it in items[:1] if isinstance(it, tuple) and it)


def _save(st: Staging, built: Mapping, classnames, templates, result: SaveResult, source, extra_meta, t0) -> None:
    import datasets

    dd = datasets.DatasetDict(dict(built))
    dd.save_to_disk(str(st.tmp), max_shard_size="500MB")
    if templates is not None:
        (st.tmp / TEMPLATES_FILE).write_text(json.dumps(list(templates), indent=1, ensure_ascii=False) + "\n")
    result.seconds = time.time() - t0
    meta = {"format": FORMAT_VERSION, "name": st.name, "num_classes": len(classnames), "rows": result.rows,
            "skipped": result.skipped, "skipped_examples": result.skipped_examples, "capped": result.capped,
            "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"mtil": _version("mtil"), "datasets": datasets.__version__},
            fingerprint.KEY: fingerprint.compute(st.tmp, classnames, result.rows)}
    meta.update(dict(extra_meta or {}))
    (st.tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:
        return None


def _pairs(data, split: str) -> Sequence[tuple[Any, int]]:
    """(images, labels) -> list of (image, label); images: a sequence, or an array [N, H, W(, C)]."""
    try:
        images, labels = data
    except Exception:
        raise MtilError(f"split {split}: expected a datasets.Dataset or an (images, labels) pair") from None
    labels = [int(x) for x in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    n = len(images)
    if n != len(labels):
        raise MtilError(f"split {split}: {n} images but {len(labels)} labels")
    return [(images[i], labels[i]) for i in range(n)]


def _prepare_dataset(ds, split: str, classnames: list[str]):
    """A user-given datasets.Dataset in the prepared schema (columns image + label, our ClassLabel)."""
    import datasets

    missing = [c for c in ("image", "label") if c not in ds.column_names]
    if missing:
        raise MtilError(f"split {split}: the dataset lacks the column(s) {', '.join(missing)} "
                        f"(it has {', '.join(ds.column_names)})")
    ds = ds.select_columns(["image", "label"])
    if isinstance(ds.features["label"], datasets.ClassLabel):
        if ds.features["label"].num_classes != len(classnames):
            raise MtilError(f"split {split}: its ClassLabel has {ds.features['label'].num_classes} classes, not "
                            f"{len(classnames)}")
    elif len(ds):
        labels = ds["label"]
        lo, hi = min(labels), max(labels)
        if lo < 0 or hi >= len(classnames):
            raise MtilError(f"split {split}: labels span {lo}..{hi}, outside 0..{len(classnames) - 1}")
    if not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds.cast(_features(classnames))


def save_prepared(root: str | os.PathLike, name: str, splits: Mapping[str, Any], classnames: Sequence[str],
                  templates: Sequence[str] | None = None, overwrite: bool = False,
                  max_per_class: int | None = None) -> SaveResult:
    """Write dataset `name` under `root` in the prepared format, atomically; the one writer of mtil.

    `splits` maps `train` and `test` (others allowed) to a `datasets.Dataset` with `image` and `label` columns,
    or to an `(images, labels)` pair: images as PIL images, uint8 arrays (a list, or one [N, H, W(, C)] array;
    PNG-encoded), encoded bytes or file paths (stored as they are; ones that do not decode are skipped and
    counted), labels as ints in 0..len(classnames)-1. `templates` (optional) is saved as `templates.json`.
    An existing `ROOT/<name>` is replaced only with `overwrite=True`.
    """
    classnames, templates = check_writer_inputs(name, splits, classnames, templates)
    with staging(root, name, overwrite) as st:
        import datasets
        if all(isinstance(v, datasets.Dataset) for v in splits.values()):
            t0 = time.time()
            result = SaveResult(st.name, st.final, len(classnames))
            built = {}
            with _quiet_progress():
                for split, ds in splits.items():
                    built[split] = _prepare_dataset(ds, split, classnames)
                    if max_per_class is not None:
                        built[split] = _cap(built[split], max_per_class, result, split)
                    result.rows[split] = len(built[split])
                    result.skipped[split] = 0
                    if len(built[split]) == 0:
                        raise MtilError(f"{st.name}: split '{split}' has no images; nothing was written")
                    if split == "train":
                        _refuse_empty_classes(st.name, set(built[split]["label"]), len(classnames), classnames)
                _save(st, built, classnames, templates, result, "datasets.Dataset", None, t0)
        else:
            items = {}
            for split, data in splits.items():
                if isinstance(data, datasets.Dataset):
                    col = data.cast_column("image", datasets.Image(decode=False)) \
                        if "image" in data.column_names else data
                    data = (list(col["image"]), list(col["label"]))
                items[split] = _pairs(data, split)
            result = _write_rows(st, items, classnames, templates, max_per_class, "in-memory images", None)
        st.commit()
    result.path = st.final
    log.info("prepared %s: %s -> %s", st.name, ", ".join(f"{k} {v}" for k, v in result.rows.items()), st.final)
    return result


def _cap(ds, max_per_class: int, result: SaveResult, split: str):
    seen: Counter = Counter()
    keep = []
    for i, y in enumerate(ds["label"]):
        if seen[y] < max_per_class:
            seen[y] += 1
            keep.append(i)
    if len(keep) < len(ds):
        result.capped[split] = len(ds) - len(keep)
        ds = ds.select(keep)
    return ds
