"""The Hugging Face hub source: `datasets.load_dataset` of a default repository (a catalog file's `sources.hf`)
or a given one, its image and label columns found, labels mapped by name (honours `HF_HUB_OFFLINE` /
`HF_DATASETS_OFFLINE`)."""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator

from ...errors import MtilError
from .. import registry
from . import network
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


def _repos() -> dict[str, dict]:
    """The registered datasets' hub entries (catalog key `sources.hf`)."""
    specs = {name: registry.source_specs(name).get("hf") for name in registry.names()}
    return {name: spec for name, spec in specs.items() if spec}


# Default Hugging Face hub repositories (any other: --hf REPO). Labels are matched by name.
HF_REPOS = {name: spec["repo"] for name, spec in _repos().items()}
# Label columns tried first, per dataset (then `label`, `fine_label`, then the first ClassLabel column).
HF_LABEL_COLUMNS = {name: tuple(spec["label_columns"]) for name, spec in _repos().items() if "label_columns" in spec}


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

    def __init__(self, ds, image_col: str, label_col: str, remap: list[int] | None, where: str):
        import datasets
        self.ds = ds.select_columns([image_col, label_col]).cast_column(image_col, datasets.Image(decode=False))
        self.image_col, self.label_col, self.remap, self.where = image_col, label_col, remap, where

    def __len__(self) -> int:
        return len(self.ds)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        for row in self.ds:
            y = int(row[self.label_col])
            if self.remap is not None and not 0 <= y < len(self.remap):
                raise MtilError(f"{self.where}: label {y} lies outside its {len(self.remap)} label names (a "
                                "damaged copy); clear it from the Hugging Face cache and prepare again")
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
    offline = network.offline_requested(hf=True)
    if not offline and not network.network_available("huggingface.co", hf=True):
        raise network.no_network(canon or name, data_root, "cannot reach huggingface.co")
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

    def label_names(split: str) -> list[str]:
        feat = dd[split].features.get(label_col)
        return list(getattr(feat, "names", []) or [])

    source_names = label_names(train)
    if canon is not None:
        matcher = LabelMatcher(canon)
        classnames = list(matcher.classnames)
        if not source_names:
            log.warning("%s: '%s' has no label names; assuming the registry's label order", canon, repo)

        def remap_of(split):   # per split, by name: a split's label names need not be the training split's
            names_ = label_names(split)
            return matcher.map(names_, f"'{repo}' label names ({split})") if names_ else None
    else:
        if not source_names:
            raise MtilError(f"'{repo}' has no label names; a new dataset needs them (ClassLabel names)")
        classnames = [clean_classname(s) for s in source_names]
        if test is not None and label_names(test) != source_names:
            raise MtilError(f"'{repo}': splits {train} and {test} name their labels differently; register the "
                            "dataset (mtil.data.registry.register) so labels are mapped by name")

        def remap_of(split):
            return None
    splits = {"train": _HFItems(dd[train], image_col, label_col, remap_of(train), f"'{repo}' split {train}")}
    if test is not None:
        splits["test"] = _HFItems(dd[test], image_col, label_col, remap_of(test), f"'{repo}' split {test}")
    else:
        splits = _split_items(list(splits["train"]), train_fraction, seed)
    return Plan(canon or name, classnames, splits, f"Hugging Face {repo} ({train} + {test or 'seeded split'})")
