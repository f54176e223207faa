"""mtil's one prepared on-disk format, its writer and its loader.

`ROOT/<Name>/` is a `datasets.DatasetDict` written with `save_to_disk`: splits `train` and `test`, columns
`image` (`datasets.Image()`, the encoded file bytes) and `label` (`datasets.ClassLabel(names=classnames)`).
Beside the splits: `mtil.json` (how it was made: source, counts, skipped images) and, optionally,
`templates.json` (a JSON list of prompt templates, used for datasets the registry does not know).

Writing is atomic: everything goes to `ROOT/.<Name>.tmp` and is renamed into place at the end, so a prepared
dataset is either complete or absent; an existing one is replaced only with `overwrite=True`.

    >>> from mtil.data.prepared import load_split, load_info
    >>> ds = load_split("data", "DTD", "test")       # datasets.Dataset; ds[i]["image"] is a PIL image
    >>> info = load_info("data", "DTD")              # DatasetInfo(name, classnames, templates)
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..errors import MtilError
from . import registry
from .registry import DatasetInfo

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
META_FILE = "mtil.json"
TEMPLATES_FILE = "templates.json"
DEFAULT_TEMPLATES = ["a photo of a {}."]
FORMAT_VERSION = 1
_SHOW_SKIPPED = 20  # skipped images logged one by one (the rest are only counted)


# ----------------------------------------------------------------------------------------------------- locations
def _entries(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []


def dataset_dir(root: str | os.PathLike, name: str) -> Path:
    """Where dataset `name` lives (or would live) under `root`.

    Registered datasets live under their canonical name (`cars` -> `ROOT/StanfordCars`); an existing folder whose
    name differs only in case or punctuation is found too.
    """
    root = Path(root)
    canon = registry.resolve(name) or str(name)
    path = root / canon
    if path.exists():
        return path
    wanted = registry.key(canon)
    for p in _entries(root):
        if p.is_dir() and registry.key(p.name) == wanted:
            return p
    return path


def prepare_command(name: str, root: str | os.PathLike, overwrite: bool = False) -> str:
    """The `mtil prepare` command that (re-)creates dataset `name` under `root`."""
    canon = registry.resolve(name)
    cmd = f"mtil prepare {canon or name} --root {root}"
    if canon is None:
        cmd += " --from <image folder>"
    return cmd + (" --overwrite" if overwrite else "")


def _features(classnames: Sequence[str]):
    import datasets
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classnames))})


# ------------------------------------------------------------------------------------------------------- loading
def _check_root(root: Path, name: str) -> None:
    if not root.is_dir():
        raise MtilError(f"data root '{root}' does not exist; set data.root=<folder with prepared datasets> or run "
                        f"`{prepare_command(name, root)}`")


def _split_names(path: Path, name: str, root: Path) -> list[str]:
    fix = f"re-create it with `{prepare_command(name, root, overwrite=True)}`"
    ddj = path / "dataset_dict.json"
    if not ddj.is_file():
        what = "a single split, not train/test" if (path / "state.json").is_file() else "no dataset_dict.json"
        raise MtilError(f"'{path}' is not a prepared dataset ({what}); {fix}")
    try:
        splits = json.loads(ddj.read_text())["splits"]
        if not isinstance(splits, list):
            raise TypeError("splits is not a list")
    except Exception as e:
        raise MtilError(f"'{ddj}' is unreadable ({type(e).__name__}); {fix}") from None
    return [str(s) for s in splits]


def _split_features(path: Path, split: str):
    """Features of one saved split, read from its dataset_info.json (no arrow file is opened)."""
    import datasets
    info = json.loads((path / split / "dataset_info.json").read_text())
    return datasets.Features.from_dict(info["features"])


def load_split(root: str | os.PathLike, name: str, split: str):
    """One split of a prepared dataset as a `datasets.Dataset` (memory-mapped; `image` decodes on access).

    Raises MtilError (one line naming the path and the command that fixes it) when the data root or the dataset
    is missing, the dataset is malformed (missing split or columns, unreadable arrow files) or the split is empty.
    """
    import datasets

    root = Path(root)
    _check_root(root, name)
    path = dataset_dir(root, name)
    if not path.is_dir():
        raise MtilError(f"dataset '{name}' is not prepared under '{root}' (no '{path}'); run "
                        f"`{prepare_command(name, root)}`")
    fix = f"re-create it with `{prepare_command(name, root, overwrite=True)}`"
    splits = _split_names(path, name, root)
    if split not in splits:
        raise MtilError(f"'{path}' has no split '{split}' (it has: {', '.join(splits) or 'none'}); {fix}")
    if not (path / split).is_dir():
        raise MtilError(f"the folder of split '{split}' ('{path / split}') is missing although "
                        f"dataset_dict.json lists it; {fix}")
    try:
        state = json.loads((path / split / "state.json").read_text())
    except Exception:
        state = None
    if isinstance(state, dict) and state.get("_data_files") == []:
        raise MtilError(f"split '{split}' of '{path}' is empty (no data files); {fix}")
    try:
        ds = datasets.load_from_disk(str(path / split))
        if not isinstance(ds, datasets.Dataset):
            raise TypeError(f"expected a Dataset, found {type(ds).__name__}")
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise MtilError(f"cannot read '{path / split}' ({type(e).__name__}{': ' + first if first else ''}); "
                        f"{fix}") from None
    feats = ds.features
    _check_features(feats, path / split, fix)
    if len(ds) == 0:
        raise MtilError(f"split '{split}' of '{path}' is empty; {fix}")
    if not feats["image"].decode:
        ds = ds.cast_column("image", datasets.Image())
    return ds


def check_consistent(root: str | os.PathLike, name: str, classnames: Sequence[str], splits: Mapping) -> None:
    """Every split's ClassLabel names the dataset's classes, every label lies in [0, classes), and every class
    has at least one training image; else one MtilError line naming the split and what is wrong."""
    import numpy as np

    path, n = dataset_dir(root, name), len(classnames)
    fix = f"re-create it with `{prepare_command(name, root, overwrite=True)}`"
    for split, ds in splits.items():
        stored = list(ds.features["label"].names)
        if len(stored) != n:
            raise MtilError(f"split '{split}' of '{path}' has {len(stored)} classes but the dataset has {n}; {fix}")
        labels = np.asarray(ds["label"], dtype=np.int64)
        bad = labels[(labels < 0) | (labels >= n)]
        if len(bad):
            raise MtilError(f"split '{split}' of '{path}' has {len(bad)} label(s) outside 0..{n - 1} "
                            f"(e.g. {int(bad[0])}); {fix}")
        if split == "train":
            empty = sorted(set(range(n)) - set(labels.tolist()))
            if empty:
                names = ", ".join(str(classnames[c]) for c in empty[:3]) + (" ..." if len(empty) > 3 else "")
                raise MtilError(f"split 'train' of '{path}' has no images of {len(empty)} class(es) ({names}); "
                                f"{fix}")


def _check_features(feats, where: Path, fix: str) -> None:
    import datasets

    bad = [c for c, t in (("image", datasets.Image), ("label", datasets.ClassLabel))
           if c not in feats or not isinstance(feats[c], t)]
    if bad:
        have = ", ".join(f"{k}: {type(v).__name__}" for k, v in feats.items())
        raise MtilError(f"'{where}' lacks the column(s) {' and '.join(bad)} of the prepared format "
                        f"(image: Image, label: ClassLabel; it has {have or 'none'}); {fix}")


def _prepared_classnames(path: Path, name: str, root: Path) -> list[str] | None:
    """Class names stored in the ClassLabel of a prepared dataset (None when it is not prepared)."""
    if not path.is_dir():
        return None
    fix = f"re-create it with `{prepare_command(name, root, overwrite=True)}`"
    splits = _split_names(path, name, root)
    ordered = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    if not ordered:
        raise MtilError(f"'{path}' has no splits; {fix}")
    try:
        feats = _split_features(path, ordered[0])
    except Exception as e:
        raise MtilError(f"cannot read '{path / ordered[0] / 'dataset_info.json'}' ({type(e).__name__}); "
                        f"{fix}") from None
    _check_features(feats, path / ordered[0], fix)
    return list(feats["label"].names)


def read_templates(path: Path) -> list[str] | None:
    """`templates.json` of a prepared dataset folder (None when absent)."""
    f = path / TEMPLATES_FILE
    if not f.is_file():
        return None
    try:
        templates = json.loads(f.read_text())
    except Exception as e:
        raise MtilError(f"'{f}' is not valid JSON ({type(e).__name__}); write a JSON list of templates such as "
                        '["a photo of a {}."]') from None
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) and "{}" in t
                                                                     for t in templates):
        raise MtilError(f"'{f}' must be a non-empty JSON list of strings, each with '{{}}' for the class name")
    return templates


def load_info(root: str | os.PathLike, name: str) -> DatasetInfo:
    """Class names and templates of dataset `name`.

    Registered datasets: the registry's lists (a prepared copy with another number of classes is an error).
    Others: class names from the prepared ClassLabel, templates from `ROOT/<Name>/templates.json`, else
    `["a photo of a {}."]`.
    """
    root = Path(root)
    canon = registry.resolve(name)
    path = dataset_dir(root, name)
    if canon is not None:
        info = registry.get(canon)
        if root.is_dir():
            stored = _prepared_classnames(path, canon, root)
            if stored is not None and len(stored) != info.num_classes:
                raise MtilError(f"'{path}' has {len(stored)} classes but the registered {canon} has "
                                f"{info.num_classes}; re-create it with "
                                f"`{prepare_command(canon, root, overwrite=True)}`")
        return info
    _check_root(root, name)
    stored = _prepared_classnames(path, name, root)
    if stored is None:
        raise MtilError(f"dataset '{name}' is not registered and not prepared under '{root}' (no '{path}'); run "
                        f"`{prepare_command(name, root)}`")
    return DatasetInfo(path.name, stored, read_templates(path) or list(DEFAULT_TEMPLATES))


def read_meta(root: str | os.PathLike, name: str) -> dict | None:
    """`mtil.json` of a prepared dataset (how it was made), or None."""
    f = dataset_dir(root, name) / META_FILE
    try:
        return json.loads(f.read_text())
    except Exception:
        return None


def is_prepared(root: str | os.PathLike, name: str) -> bool:
    path = dataset_dir(root, name)
    return (path / "dataset_dict.json").is_file()


def list_prepared(root: str | os.PathLike) -> list[str]:
    """Names of the prepared datasets (folders holding a DatasetDict) under `root`, sorted."""
    root = Path(root)
    return sorted((p.name for p in _entries(root) if (p / "dataset_dict.json").is_file()), key=str.lower)


# ------------------------------------------------------------------------------------------------------- writing
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


class Staging:
    """Exclusive, atomic write of `ROOT/<name>`: build in `ROOT/.<name>.tmp`, then `commit()` renames it in.

    `work` (`ROOT/.<name>.work`) is scratch space (caches, extracted archives), removed on exit. Leaving the
    `with` block without `commit()` removes everything written and leaves an existing dataset untouched.
    """

    def __init__(self, root: str | os.PathLike, name: str, overwrite: bool = False):
        self.root = Path(root)
        self.name = name
        self.overwrite = overwrite
        self.final = self.root / name
        self.tmp = self.root / f".{name}.tmp"
        self.work = self.root / f".{name}.work"
        self._old = self.root / f".{name}.old"
        self._lock_path = self.root / f".{name}.lock"
        self._lock = None
        self._created_root = False
        self.committed = False

    def _check_target(self) -> None:
        existing = dataset_dir(self.root, self.name)
        if existing.exists() and not self.overwrite:
            raise MtilError(f"'{existing}' already exists; pass --overwrite (or overwrite=True) to replace it")
        if existing.exists() and existing != self.final:
            self.final = existing  # same dataset under another spelling: replace it in place

    def __enter__(self) -> "Staging":
        self._created_root = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MtilError(f"cannot create data root '{self.root}' ({e.strerror or e}); choose a writable --root")
        self._check_target()
        self._acquire()
        try:
            for p in (self.tmp, self.work):
                if p.exists():
                    log.info("removing %s left by an interrupted run", p)
                    shutil.rmtree(p)
            if self._old.exists() and self.final.exists():
                shutil.rmtree(self._old)
            self.work.mkdir()
        except BaseException:
            self._release()
            raise
        return self

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            return
        f = open(self._lock_path, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise MtilError(f"another process is writing '{self.final}' (lock '{self._lock_path}'); wait for it "
                            "to finish") from None
        self._lock = f

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock_path.unlink()
            self._lock.close()
            self._lock = None

    def commit(self) -> Path:
        """Move the finished `tmp` folder into place (replacing an existing dataset only with overwrite)."""
        if not (self.tmp / "dataset_dict.json").is_file():
            raise MtilError(f"internal error: nothing complete to commit in '{self.tmp}'")
        if self.final.exists():
            if not self.overwrite:
                raise MtilError(f"'{self.final}' appeared while preparing; pass --overwrite to replace it")
            os.replace(self.final, self._old)
            try:
                os.replace(self.tmp, self.final)
            except BaseException:
                os.replace(self._old, self.final)
                raise
            shutil.rmtree(self._old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
        self.committed = True
        return self.final

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for p in (self.tmp, self.work):
                if p.exists():
                    shutil.rmtree(p, ignore_errors=True)
        finally:
            self._release()
            if not self.committed and self._created_root:
                with contextlib.suppress(OSError):
                    self.root.rmdir()  # only when empty


def staging(root: str | os.PathLike, name: str, overwrite: bool = False) -> Staging:
    """`with staging(root, name, overwrite) as st: ...; st.commit()` (see Staging)."""
    return Staging(root, _folder_name(name), overwrite)


def _folder_name(name: str) -> str:
    canon = registry.resolve(name)
    if canon is not None:
        return canon
    name = str(name)
    if not registry._NAME_RE.match(name):
        raise MtilError(f"dataset name {name!r} must start with a letter or digit and use only letters, digits "
                        "and _ . + - (it names the folder ROOT/<name>)")
    return name


def _encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; still lossless
    return buf.getvalue()


def to_image_cell(payload: Any) -> tuple[dict, bool]:
    """(`{"bytes": ..., "path": ...}`, needs_check) for one image given as bytes, a file path, a PIL image,
    a uint8 array (HxW, HxWx1/3/4) or an undecoded datasets image dict. Arrays and PIL images are PNG-encoded
    (lossless); bytes and files are stored as they are and must be checked to decode."""
    from PIL import Image

    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(payload), "path": None}, True
    if isinstance(payload, (str, os.PathLike)):
        p = Path(payload)
        return {"bytes": p.read_bytes(), "path": p.name}, True
    if isinstance(payload, Image.Image):
        return {"bytes": _encode_png(payload), "path": None}, False
    if isinstance(payload, dict):
        if payload.get("bytes") is not None:
            path = payload.get("path")
            return {"bytes": bytes(payload["bytes"]), "path": os.path.basename(path) if path else None}, True
        if payload.get("path"):
            return to_image_cell(payload["path"])
        raise ValueError("image dict without bytes or path")
    import numpy as np
    if isinstance(payload, np.ndarray) or hasattr(payload, "__array__"):
        arr = np.asarray(payload)
        if arr.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, not {arr.dtype}")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise ValueError(f"image arrays must be HxW or HxWx(1|3|4), not {tuple(arr.shape)}")
        return {"bytes": _encode_png(Image.fromarray(arr)), "path": None}, False
    raise ValueError(f"unsupported image type {type(payload).__name__}")


def check_decodes(data: bytes) -> tuple[int, int]:
    """Fully decode encoded image bytes (raises on a broken image); returns (width, height)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


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

    def __init__(self, split: str, num_classes: int, max_per_class: int | None, result: SaveResult):
        self.split, self.num_classes, self.max_per_class, self.result = split, num_classes, max_per_class, result
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
                cell, needs_check = to_image_cell(payload)
                if needs_check:
                    check_decodes(cell["bytes"])
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
    import datasets

    classnames = _check_classnames(st.name, classnames)
    templates = _check_templates(templates)
    _check_split_names(splits)
    features = _features(classnames)
    result = SaveResult(st.name, st.final, len(classnames))
    t0 = time.time()
    built = {}
    with _quiet_progress():
        for split, items in splits.items():
            writer = _SplitWriter(split, len(classnames), max_per_class, result)
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
            "versions": {"mtil": _version("mtil"), "datasets": datasets.__version__}}
    meta.update(dict(extra_meta or {}))
    (st.tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def _version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:
        return None


def _check_split_names(splits: Mapping) -> None:
    if not isinstance(splits, Mapping) or not splits:
        raise MtilError("splits must be a non-empty mapping of split name -> data")
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise MtilError(f"the prepared format needs the splits {' and '.join(SPLITS)}; missing: "
                        f"{', '.join(missing)}")
    for s in splits:
        if not isinstance(s, str) or not s.isidentifier():
            raise MtilError(f"split name {s!r} must be a plain word such as 'train' or 'test'")


def _check_classnames(name: str, classnames: Sequence[str]) -> list[str]:
    classnames = [str(c) for c in classnames]
    if not classnames or len(set(classnames)) != len(classnames):
        raise MtilError(f"{name}: class names must be a non-empty list without duplicates")
    canon = registry.resolve(name)
    if canon is not None:
        expected = registry.get(canon).num_classes
        if len(classnames) != expected:
            raise MtilError(f"{canon} has {expected} classes in the registry but {len(classnames)} class names "
                            "were given; nothing was written")
    return classnames


def _check_templates(templates: Sequence[str] | None) -> list[str] | None:
    if templates is None:
        return None
    templates = list(templates)
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise MtilError("templates must be a non-empty list of strings, each with '{}' for the class name")
    return templates


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
    classnames = _check_classnames(name, classnames)
    templates = _check_templates(templates)
    _check_split_names(splits)
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
                _save(st, built, classnames, templates, result, "datasets.Dataset", None, t0)
        else:
            items = {}
            for split, data in splits.items():
                if isinstance(data, datasets.Dataset):
                    col = data.cast_column("image", datasets.Image(decode=False)) \
                        if "image" in data.column_names else data
                    data = (list(col["image"]), list(col["label"]))
                items[split] = _pairs(data, split)
            result = write_items(st, items, classnames, templates, max_per_class, source="in-memory images")
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
