"""Consistency checks of the prepared format: a saved split's columns, a dataset's labels against its classes,
and a writer's inputs (split names, class names, templates)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ...errors import MtilError
from .. import registry
from . import fingerprint
from .layout import SPLITS, dataset_dir, recreate_hint


def check_consistent(root: str | os.PathLike, name: str, classnames: Sequence[str], splits: Mapping) -> None:
    """Every split's ClassLabel names the dataset's classes (a registered dataset's in the registry's label order),
    all splits the same list in the same order, every label lies in [0, classes), every class has at least one
    training image, and the row counts and class list are those mtil prepare recorded; else one MtilError line naming the split and what is wrong."""
    import numpy as np

    path, n = dataset_dir(root, name), len(classnames)
    fix = recreate_hint(name, root)
    first = None
    for split, ds in splits.items():
        stored = list(ds.features["label"].names)
        if len(stored) != n:
            raise MtilError(f"split '{split}' of '{path}' has {len(stored)} classes but the dataset has {n}; {fix}")
        if first is None:
            first = (split, stored)
            _check_registry_order(name, stored, f"split '{split}' of '{path}'", fix)
        elif stored != first[1]:
            i = next(i for i, (a, b) in enumerate(zip(first[1], stored)) if a != b)
            raise MtilError(f"splits '{first[0]}' and '{split}' of '{path}' name the classes differently (label {i}: "
                            f"{first[1][i]!r} in '{first[0]}', {stored[i]!r} in '{split}'); {fix}")
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
    fingerprint.check_against_record(root, name, splits)


def _check_registry_order(name: str, stored: Sequence[str], where: str, fix: str) -> None:
    """A registered dataset's stored class list names its classes in the registry's label order (any of its
    name sets or source spellings), so that label i means the registry's class i; else one MtilError line."""
    if registry.resolve(name) is None:
        return
    from ..sources.labels import LabelMatcher

    matcher = LabelMatcher(name)
    for i, c in enumerate(stored):
        j = matcher.match(c)
        if j != i:
            what = f"{matcher.name}'s label {j} ({matcher.classnames[j]!r})" if j is not None else \
                f"no {matcher.name} class"
            raise MtilError(f"{where} calls label {i} {c!r}, which is {what}, where {matcher.name} has "
                            f"{matcher.classnames[i]!r}: its labels do not match {matcher.name}'s class list; {fix}")


def _check_features(feats, where: Path, fix: str) -> None:
    import datasets

    bad = [c for c, t in (("image", datasets.Image), ("label", datasets.ClassLabel))
           if c not in feats or not isinstance(feats[c], t)]
    if bad:
        have = ", ".join(f"{k}: {type(v).__name__}" for k, v in feats.items())
        raise MtilError(f"'{where}' lacks the column(s) {' and '.join(bad)} of the prepared format "
                        f"(image: Image, label: ClassLabel; it has {have or 'none'}); {fix}")


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
    bad = [t for t in templates if not registry.valid_template(t)]
    if not templates or bad:
        raise MtilError(f"templates must be a non-empty list, each {registry.TEMPLATE_RULE}"
                        + (f" (not {bad[0]!r})" if bad else ""))
    return templates


def check_writer_inputs(name: str, splits: Mapping, classnames: Sequence[str],
                        templates: Sequence[str] | None) -> tuple[list[str], list[str] | None]:
    """The writers' input checks, made once per write: class names (count against the registry), templates,
    split names; returns the class names and templates as lists."""
    classnames = _check_classnames(name, classnames)
    templates = _check_templates(templates)
    _check_split_names(splits)
    return classnames, templates
