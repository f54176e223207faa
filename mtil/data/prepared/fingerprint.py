"""A prepared dataset's fingerprint: what `mtil prepare` wrote, recorded in `mtil.json` and checked on every read.

Per split: its row count, the size of each data file, and the sha256 of the data files' bytes (the arrow files
hold the images, the labels and the class list); for the dataset: the sha256 of its class list. The hash is taken
once, when the dataset is written. A read checks the row counts and class lists of the loaded splits
(`check_against_record`) and the data files' names and sizes (`read_fingerprint`: one stat per file), so loading costs
no second read of the images; `mtil prepare NAME --check` re-hashes the files (`verify_content`). A dataset
without a record (written by an earlier mtil, or by hand with `save_to_disk`) is hashed when it is first read in
a process. The fingerprint says nothing about where the dataset lies: a data root moved or copied elsewhere keeps
it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

from ...errors import MtilError
from .layout import META_FILE, dataset_dir, recreate_hint

log = logging.getLogger(__name__)

KEY = "fingerprint"            # its key in mtil.json
_CHUNK = 1 << 20
_hashed: dict[tuple, dict] = {}   # (folder, file names, sizes, mtimes) -> fingerprint of an unrecorded dataset


def classes_sha256(classnames: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([str(c) for c in classnames]).encode()).hexdigest()


def _split_names(path: Path) -> list[str]:
    return [str(s) for s in json.loads((path / "dataset_dict.json").read_text())["splits"]]


def _data_files(split_dir: Path) -> list[Path]:
    """The split's data files, as its state.json lists them (save_to_disk's own record)."""
    state = json.loads((split_dir / "state.json").read_text())
    return [split_dir / f["filename"] for f in state["_data_files"]]


def _sha256(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _rows(files: Sequence[Path]) -> int:
    import pyarrow as pa
    total = 0
    for f in files:
        with pa.memory_map(str(f)) as source:
            total += sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    return total


def compute(path: Path, classnames: Sequence[str], rows: Mapping[str, int] | None = None) -> dict:
    """The fingerprint of the prepared dataset folder `path` (reads every data file once); `rows` per split when
    the writer knows them (else they are counted from the files)."""
    splits = {}
    for split in _split_names(path):
        files = _data_files(path / split)
        splits[split] = {"rows": int(rows[split]) if rows and split in rows else _rows(files),
                         "files": {f.name: f.stat().st_size for f in files}, "sha256": _sha256(files)}
    return {"classes_sha256": classes_sha256(classnames), "splits": splits}


def _stored_classnames(path: Path, split: str) -> list[str]:
    info = json.loads((path / split / "dataset_info.json").read_text())
    return list(info["features"]["label"]["names"])


def _recorded(path: Path) -> dict | None:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    rec = meta.get(KEY) if isinstance(meta, dict) else None
    return rec if isinstance(rec, dict) and isinstance(rec.get("splits"), dict) else None


def read_fingerprint(root: str | os.PathLike, name: str) -> dict:
    """The fingerprint of prepared dataset `name` under `root`: the one `mtil prepare` recorded, after checking
    that the data files it lists are there with the sizes it wrote (else one MtilError line); for a dataset
    without a record, its files hashed now. `recorded` says which."""
    path = dataset_dir(root, name)
    fix = recreate_hint(name, root)
    rec = _recorded(path)
    try:
        if rec is None:
            return _unrecorded(path)
        if set(_split_names(path)) != set(rec["splits"]):
            raise MtilError(f"'{path}' holds the splits {', '.join(_split_names(path))} but mtil prepare wrote "
                            f"{', '.join(rec['splits'])}; {fix}")
        for split, entry in rec["splits"].items():
            files = _data_files(path / split)
            have = {f.name: f.stat().st_size for f in files}
            if have != entry["files"]:
                detail = next((f"{n} is {have[n]} bytes, mtil prepare wrote {size}" for n, size in entry["files"].items()
                               if n in have and have[n] != size), None)
                detail = detail or f"data files {sorted(have)}, mtil prepare wrote {sorted(entry['files'])}"
                raise MtilError(f"split '{split}' of '{path}' is not what mtil prepare wrote ({detail}); {fix}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MtilError(f"cannot read the files of '{path}' ({type(e).__name__}); {fix}") from None
    return {**rec, "recorded": True}


def _unrecorded(path: Path) -> dict:
    files = {s: _data_files(path / s) for s in _split_names(path)}
    key = (str(path.resolve()), tuple((s, f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                      for s, fs in files.items() for f in fs))
    if key not in _hashed:
        t0 = time.perf_counter()
        first = next(iter(files))
        _hashed[key] = {**compute(path, _stored_classnames(path, first)), "recorded": False}
        size = sum(f.stat().st_size for fs in files.values() for f in fs)
        log.info("%s: no fingerprint recorded by mtil prepare; hashed its %.1f MB of data files in %.2f s", path,
                 size / 2 ** 20, time.perf_counter() - t0)
    return _hashed[key]


def check_against_record(root: str | os.PathLike, name: str, splits: Mapping) -> None:
    """The loaded splits (`datasets.Dataset`s) have the row counts and the class list mtil prepare recorded."""
    path = dataset_dir(root, name)
    rec = _recorded(path)
    if rec is None:
        return
    fix = recreate_hint(name, root)
    for split, ds in splits.items():
        entry = rec["splits"].get(split)
        if entry is None:
            continue
        if len(ds) != entry["rows"]:
            raise MtilError(f"split '{split}' of '{path}' has {len(ds)} rows but mtil prepare wrote "
                            f"{entry['rows']} (a truncated or replaced file); {fix}")
        if classes_sha256(ds.features["label"].names) != rec["classes_sha256"]:
            raise MtilError(f"the class list of split '{split}' of '{path}' is not the one mtil prepare wrote "
                            f"(edited dataset_info.json?); {fix}")


def verify_content(root: str | os.PathLike, name: str) -> dict:
    """Re-hash the data files of dataset `name` and compare with the record (`mtil prepare --check`); returns the
    fingerprint (with `recorded`)."""
    path = dataset_dir(root, name)
    fp = read_fingerprint(root, name)
    if not fp["recorded"]:
        return fp
    for split, entry in fp["splits"].items():
        if _sha256(_data_files(path / split)) != entry["sha256"]:
            raise MtilError(f"the data files of split '{split}' of '{path}' changed since mtil prepare wrote them "
                            f"(sha256 differs, same sizes); {recreate_hint(name, root)}")
    return fp
