"""The prepared format's names and places: split and file names, where `ROOT/<Name>` is, its features."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ...errors import MtilError
from .. import registry

SPLITS = ("train", "test")
META_FILE = "mtil.json"
TEMPLATES_FILE = "templates.json"
DEFAULT_TEMPLATES = ["a photo of a {}."]
FORMAT_VERSION = 1


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


def _folder_name(name: str) -> str:
    canon = registry.resolve(name)
    if canon is not None:
        return canon
    name = str(name)
    if not registry.valid_name(name):
        raise MtilError(f"dataset name {name!r} {registry.NAME_RULE}")
    return name


def prepare_command(name: str, root: str | os.PathLike, overwrite: bool = False) -> str:
    """The `mtil prepare` command that (re-)creates dataset `name` under `root`."""
    canon = registry.resolve(name)
    cmd = f"mtil prepare {canon or name} --root {root}"
    if canon is None:
        cmd += " --from <image folder>"
    return cmd + (" --overwrite" if overwrite else "")


def recreate_hint(name: str, root: str | os.PathLike) -> str:
    """The end of every error about a malformed prepared dataset: how to re-create it."""
    return f"re-create it with `{prepare_command(name, root, overwrite=True)}`"


def _features(classnames: Sequence[str]):
    import datasets
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classnames))})
