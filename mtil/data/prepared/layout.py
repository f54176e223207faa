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

    One rule for every look-up (`mtil.config.dataset_key`): a registered alias resolves to its canonical name
    (`cars` -> `StanfordCars`), and a folder is the dataset's when its name equals that name ignoring case and
    punctuation. Two such folders under one root are ambiguous: an error. None: `ROOT/<canonical name>`. A name
    that is a path (`../x`, `a/b`) is refused.
    """
    root = Path(root)
    canon = registry.resolve(name) or str(name)
    if not registry.valid_name(canon) or any(c in str(name) for c in "/\\") or str(name).startswith("."):
        raise MtilError(f"dataset name {str(name)[:200]!r} {registry.NAME_RULE}")
    wanted = registry.key(canon)
    found = sorted(p for p in _entries(root) if registry.key(p.name) == wanted and p.is_dir())
    if len(found) > 1:
        raise MtilError(f"'{root}' holds {len(found)} folders of dataset {canon} ({', '.join(p.name for p in found)}): "
                        "dataset names are matched ignoring case and punctuation; keep one of them")
    return found[0] if found else root / canon


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
