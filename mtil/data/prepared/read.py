"""Reading a prepared dataset: one split, its class names and templates, how it was made, what is prepared.

Every failure is one MtilError line naming the path and the `mtil prepare` command that fixes it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import MtilError
from .. import registry
from ..registry import DatasetInfo
from .checks import _check_features
from .layout import (
    DEFAULT_TEMPLATES,
    META_FILE,
    SPLITS,
    TEMPLATES_FILE,
    _entries,
    dataset_dir,
    prepare_command,
    recreate_hint,
)


def _check_root(root: Path, name: str) -> None:
    if not os.path.isdir(root):   # not Path.is_dir: a name the OS refuses (too long) is no folder either
        raise MtilError(f"data root '{root}' does not exist; set data.root=<folder with prepared datasets> or run "
                        f"`{prepare_command(name, root)}`")


def _split_names(path: Path, name: str, root: Path) -> list[str]:
    fix = recreate_hint(name, root)
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
    fix = recreate_hint(name, root)
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


def _prepared_classnames(path: Path, name: str, root: Path) -> list[str] | None:
    """Class names stored in the ClassLabel of a prepared dataset (None when it is not prepared)."""
    if not path.is_dir():
        return None
    fix = recreate_hint(name, root)
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
    if not isinstance(templates, list) or not templates or not all(registry.valid_template(t) for t in templates):
        raise MtilError(f"'{f}' must be a non-empty JSON list of templates, each {registry.TEMPLATE_RULE}")
    return templates


def load_info(root: str | os.PathLike, name: str, name_set: str | None = None) -> DatasetInfo:
    """Class names and templates of dataset `name`.

    Registered datasets: the registry's lists, class names of set `name_set` (`registry.NAME_SETS`, None = the
    default; `data.class_names`); a prepared copy with another number of classes is an error.
    Others: class names from the prepared ClassLabel, templates from `ROOT/<Name>/templates.json`, else
    `["a photo of a {}."]`.
    """
    root = Path(root)
    canon = registry.resolve(name)
    path = dataset_dir(root, name)
    if canon is not None:
        info = registry.get(canon, name_set)
        if os.path.isdir(root):
            stored = _prepared_classnames(path, canon, root)
            if stored is not None and len(stored) != info.num_classes:
                raise MtilError(f"'{path}' has {len(stored)} classes but the registered {canon} has "
                                f"{info.num_classes}; {recreate_hint(canon, root)}")
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
