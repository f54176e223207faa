"""Reference sets for the distillation baselines (ZSCL): images and sentences from outside the task stream.

`ROOT/<Name>/` holds the images as a prepared split (`train`: columns `image` and `label`, one class named
`reference`, so `prepared.load_split` reads it) and `captions.json` (a JSON list of sentences); the images and the
sentences are not paired (ZSCL distils ImageNet images against Conceptual Captions sentences). It is written
atomically like a prepared dataset. `mtil prepare NAME --from DIR --captions FILE` builds one from any folder of
images (searched recursively) and a text file with one sentence per line (or a JSON list of strings).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import MtilError
from . import prepared
from .prepared import encode
from .prepared.write import _quiet_progress
from .sources.folders import IMAGE_EXTENSIONS

CAPTIONS_FILE = "captions.json"
CLASSNAME = "reference"


def read_captions(path: str | os.PathLike) -> list[str]:
    """Sentences of a captions file: a JSON list of strings (`.json`) or one sentence per line (blank lines
    ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MtilError(f"cannot read the captions file '{path}' ({e.strerror}); give a text file with one "
                        "sentence per line") from None
    if path.suffix.lower() == ".json":
        try:
            captions = json.loads(text)
        except ValueError as e:
            raise MtilError(f"'{path}' is not valid JSON ({e}); give a JSON list of strings") from None
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise MtilError(f"'{path}' must hold a JSON list of strings")
    else:
        captions = text.splitlines()
    captions = [c.strip() for c in captions if c.strip()]
    if not captions:
        raise MtilError(f"the captions file '{path}' holds no sentences")
    return captions


def image_files(folder: str | os.PathLike, per_folder: int | None = None) -> list[Path]:
    """Every image file under `folder` (recursively), sorted; with `per_folder`, the first that many of each
    folder (an ImageNet subset: N images per class folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MtilError(f"reference images: '{folder}' is not a folder; give a folder of images with --from")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith("."))
    if per_folder is not None:
        taken: Counter = Counter()
        kept = []
        for p in found:
            if taken[p.parent] < per_folder:
                taken[p.parent] += 1
                kept.append(p)
        found = kept
    if not found:
        raise MtilError(f"no image files under '{folder}' (looked for .jpg, .png, ... recursively)")
    return found


def save_reference(root: str | os.PathLike, name: str, images: Iterable, captions: Sequence[str],
                   overwrite: bool = False, source: str | None = None) -> dict:
    """Write reference set `name` under `root`: `images` as anything `prepare` accepts for one image (file paths,
    PIL images, uint8 arrays, bytes; undecodable ones are skipped and counted), `captions` as strings. Returns the
    counts written to its `mtil.json`."""
    import datasets

    captions = [str(c) for c in captions]
    if not captions:
        raise MtilError(f"reference set {name}: no captions given; nothing was written")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[CLASSNAME])})
    counts = {"images": 0, "skipped": 0}
    t0 = time.time()

    def rows():
        for payload in images:
            try:
                cell, needs_check = encode.to_image_cell(payload)
                if needs_check:
                    encode.check_decodes(cell["bytes"])
            except Exception:  # PIL and OSError raise many types for broken files
                counts["skipped"] += 1
                continue
            counts["images"] += 1
            yield {"image": cell, "label": 0}

    with prepared.staging(root, name, overwrite) as st, _quiet_progress():
        ds = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(st.work / "cache"),
                                             split=datasets.NamedSplit("train"))
        if counts["images"] == 0:
            raise MtilError(f"reference set {name}: none of the images could be decoded; nothing was written")
        datasets.DatasetDict({"train": ds}).save_to_disk(str(st.tmp))
        (st.tmp / CAPTIONS_FILE).write_text(json.dumps(captions, ensure_ascii=False, indent=0) + "\n")
        meta = {"kind": "reference", "name": st.name, **counts, "captions": len(captions), "source": source,
                "seconds": round(time.time() - t0, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (st.tmp / prepared.META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        st.commit()
    return meta


def is_reference(root: str | os.PathLike, name: str) -> bool:
    path = prepared.dataset_dir(root, name)
    return (path / CAPTIONS_FILE).is_file() and (path / "dataset_dict.json").is_file()


def load_reference(root: str | os.PathLike, name: str):
    """(images as a `datasets.Dataset` split with undecoded `image` cells, captions) of reference set `name`."""
    import datasets

    path = prepared.dataset_dir(root, name)
    captions_file = path / CAPTIONS_FILE
    build = f"mtil prepare {name} --root {root} --from IMAGES_DIR --captions CAPTIONS.txt"
    if not path.is_dir():
        raise MtilError(f"reference set '{name}' is not under '{root}'; build it with `{build}` "
                        "(docs/baselines.md says which images and sentences to use)")
    if not captions_file.is_file():
        raise MtilError(f"'{path}' is not a reference set (no {CAPTIONS_FILE}); build one with `{build} --overwrite`")
    images = prepared.load_split(root, name, "train")
    return images.cast_column("image", datasets.Image(decode=False)), read_captions(captions_file)
