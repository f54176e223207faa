"""The dataset registry: class names and prompt templates of the MTIL datasets (and any the user registers).

The built-in entries are data, one JSON file per dataset in `mtil/data/catalog/` (class names in each dataset's
label order, the MTIL literature's templates with the training template first, the sources it is prepared from
(`sources.torchvision`, `sources.hf`); every file says where its lists come from). A dataset has named sets of
class names (NAME_SETS): `reference` (`classnames`, the default: what ZSCL's and MoE-Adapters' code prompts with)
and `clip` (`classnames_clip` where it differs: CLIP's `prompts.md` names); `data.class_names` chooses. A dataset's
facts live there only: `mtil.data.sources` reads its torchvision and hub tables from the catalog. Look-ups are
case-insensitive and ignore punctuation, and aliases resolve (`Cars` -> `StanfordCars`, `Pets` -> `OxfordPet`,
...).

    >>> from mtil.data import registry
    >>> info = registry.get("DTD")
    >>> info.name, len(info.classnames), info.templates[0]
    ('DTD', 47, 'a photo of a {} texture.')
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Iterable

from ..errors import MtilError

log = logging.getLogger(__name__)


#: The named sets of class names of a built-in dataset (catalog keys `classnames`, `classnames_clip`); the first is
#: the default.
NAME_SETS = ("reference", "clip")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: What a dataset name must be (it names the folder of the prepared dataset).
NAME_RULE = ("must start with a letter or digit and use only letters, digits and _ . + - (it names the folder "
             "ROOT/<name>)")


@dataclass
class DatasetInfo:
    """What the model needs to know about a dataset: its class names (label order) and prompt templates.

    Templates hold `{}` where the class name goes; training uses `templates[0]`, evaluation all of them.
    """
    name: str
    classnames: list[str]
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def prompts(self, template: str | None = None) -> list[str]:
        """One prompt per class with `template` (default: the training template)."""
        t = self.templates[0] if template is None else template
        return [t.replace("{}", c) for c in self.classnames]


@dataclass
class _Entry:
    info: DatasetInfo
    aliases: tuple[str, ...] = ()
    source_names: list[str] | None = None        # the source's own class names (folders, torchvision), label order
    class_aliases: dict[str, list[str]] = field(default_factory=dict)
    ignore_folders: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict)
    notes: str = ""
    sources: dict = field(default_factory=dict)  # source kind (torchvision, hf) -> how that source holds it
    builtin: bool = False
    name_sets: dict[str, list[str]] = field(default_factory=dict)   # non-default NAME_SETS, where they differ


_lock = threading.RLock()
_entries: dict[str, _Entry] = {}     # canonical name -> entry, in registration order
_keys: dict[str, str] = {}           # lookup key -> canonical name
_loaded = False


def key(name: str) -> str:
    """The look-up key of a dataset name: lower case, letters and digits only (`Oxford-IIIT-Pet` -> `oxfordiiitpet`)."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def valid_name(name) -> bool:
    """Whether `name` follows NAME_RULE."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


#: What a prompt template must be.
TEMPLATE_RULE = "a string with exactly one '{}' where the class name goes and no other braces"


def valid_template(template) -> bool:
    """Whether `template` follows TEMPLATE_RULE (`template.format(name)` then puts the name in its one place)."""
    return (isinstance(template, str) and template.count("{}") == 1 and template.count("{") == 1
            and template.count("}") == 1)


def _check_info(info: DatasetInfo, where: str) -> None:
    if not isinstance(info, DatasetInfo):
        raise MtilError(f"{where}: expected a DatasetInfo, got {type(info).__name__}")
    if not valid_name(info.name):
        raise MtilError(f"{where}: dataset name {info.name!r} {NAME_RULE}")
    names = list(info.classnames)
    if not names or not all(isinstance(c, str) and c.strip() for c in names):
        raise MtilError(f"{where}: dataset {info.name!r} needs a non-empty list of non-empty class names")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise MtilError(f"{where}: dataset {info.name!r} has duplicate class names: {', '.join(map(repr, dup[:5]))}")
    templates = list(info.templates)
    if not templates or not all(valid_template(t) for t in templates):
        raise MtilError(f"{where}: dataset {info.name!r} needs a non-empty list of templates, each "
                        f"{TEMPLATE_RULE}")


def _add(entry: _Entry, replace: bool) -> None:
    info = entry.info
    canon_key = key(info.name)
    owner = _keys.get(canon_key)
    if owner is not None and owner != info.name and not _entries[owner].builtin and replace:
        _remove(owner)
        owner = None
    if owner is not None and owner != info.name:
        raise MtilError(f"dataset name {info.name!r} collides with the registered {owner!r}; choose another name")
    old = _entries.get(info.name)
    if old is not None:
        same = (old.info.classnames == info.classnames and old.info.templates == info.templates)
        if old.builtin and same and not entry.builtin:
            return  # re-registering a built-in dataset as it is: keep the built-in entry (aliases, source names)
        if old.builtin and not same and not replace:
            raise MtilError(f"{info.name!r} is a built-in dataset with other class names/templates; register yours "
                            "under another name, or pass replace=True")
        _remove(info.name)
    for alias in entry.aliases:
        other = _keys.get(key(alias))
        if other is not None and other != info.name:
            raise MtilError(f"alias {alias!r} of {info.name!r} already names {other!r}")
    _entries[info.name] = entry
    _keys[canon_key] = info.name
    for alias in entry.aliases:
        _keys[key(alias)] = info.name


def _remove(name: str) -> None:
    _entries.pop(name, None)
    for k in [k for k, v in _keys.items() if v == name]:
        del _keys[k]


def _load_catalog() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        folder = resources.files("mtil.data") / "catalog"
        found = {}
        for item in folder.iterdir():
            if item.name.endswith(".json"):
                data = json.loads(item.read_text(encoding="utf-8"))
                found[data["name"]] = data
        order = sorted(found, key=str.lower)   # the catalog's MTIL datasets come out in Order I (alphabetical)
        for name in order:
            data = found[name]
            info = DatasetInfo(data["name"], list(data["classnames"]), list(data["templates"]))
            _check_info(info, f"catalog/{name}.json")
            sets = {s: list(data[f"classnames_{s}"]) for s in NAME_SETS[1:] if f"classnames_{s}" in data}
            for s, names_ in sets.items():
                _check_info(DatasetInfo(info.name, names_, info.templates), f"catalog/{name}.json ({s} names)")
                if len(names_) != len(info.classnames):
                    raise MtilError(f"catalog/{name}.json: classnames_{s} has {len(names_)} names, classnames "
                                    f"{len(info.classnames)}")
            _add(_Entry(info, tuple(data.get("aliases", ())), data.get("source_names"),
                        dict(data.get("class_aliases", {})), tuple(data.get("ignore_folders", ())),
                        dict(data.get("provenance", {})), data.get("notes", ""), dict(data.get("sources", {})),
                        builtin=True, name_sets=sets), replace=False)
        _loaded = True


def _copy(info: DatasetInfo) -> DatasetInfo:
    return dataclasses.replace(info, classnames=list(info.classnames), templates=list(info.templates))


def resolve(name: str) -> str | None:
    """The canonical name of a registered dataset (case-insensitive, aliases allowed), or None."""
    _load_catalog()
    with _lock:
        return _keys.get(key(name))


def is_registered(name: str) -> bool:
    return resolve(name) is not None


def names() -> list[str]:
    """Registered dataset names: the 11 MTIL datasets (Order I), TinyImageNet, then user-registered ones."""
    _load_catalog()
    with _lock:
        return list(_entries)


def get(name: str, name_set: str | None = None) -> DatasetInfo:
    """The DatasetInfo of a registered dataset (a copy: changing it does not change the registry), with the class
    names of set `name_set` (one of NAME_SETS; None = the default, `reference`). A dataset without a separate list
    for a set (every user-registered one, and the built-in ones whose names agree) gives its one list."""
    canon = resolve(name)
    if canon is None:
        raise MtilError(f"unknown dataset {name!r}; registered: {', '.join(names())} (register others with "
                        "mtil.data.registry.register, or prepare them from an image folder with `mtil prepare "
                        f"{name} --root ROOT --from DIR`)")
    if name_set is not None and name_set not in NAME_SETS:
        raise MtilError(f"class-name set {name_set!r} is not one of {', '.join(NAME_SETS)} (data.class_names)")
    with _lock:
        entry = _entries[canon]
        info = _copy(entry.info)
    if name_set in entry.name_sets:
        info.classnames = list(entry.name_sets[name_set])
    return info


def name_sets(name: str) -> dict[str, list[str]]:
    """Every named set of class names of a registered dataset, set -> names in label order (NAME_SETS; a set
    without its own list repeats the default one)."""
    return {s: get(name, s).classnames for s in NAME_SETS}


def register(info: DatasetInfo, aliases: Iterable[str] = (), replace: bool = False) -> DatasetInfo:
    """Register (or re-register) a dataset; returns it.

    Re-registering the same name replaces a user entry. A built-in entry can only be replaced with identical
    lists, or with `replace=True`.
    """
    _load_catalog()
    info = _copy(info)
    _check_info(info, "register")
    with _lock:
        _add(_Entry(info, tuple(aliases)), replace=replace)
    log.debug("registered dataset %s (%d classes)", info.name, len(info.classnames))
    return _copy(info)


def unregister(name: str) -> None:
    """Remove a user-registered dataset (built-in ones stay)."""
    canon = resolve(name)
    if canon is None:
        return
    with _lock:
        if _entries[canon].builtin:
            raise MtilError(f"{canon!r} is a built-in dataset and cannot be unregistered")
        _remove(canon)


def aliases(name: str) -> list[str]:
    canon = resolve(name)
    return [] if canon is None else list(_entries[canon].aliases)


def source_names(name: str) -> list[str] | None:
    """The dataset's own class names in label order (folder names, torchvision's), where they differ from CLIP's."""
    canon = resolve(name)
    if canon is None or _entries[canon].source_names is None:
        return None
    return list(_entries[canon].source_names)


def class_aliases(name: str) -> dict[str, list[str]]:
    """Other accepted spellings of some class names (e.g. ZSCL's), class name -> list of spellings."""
    canon = resolve(name)
    return {} if canon is None else {k: list(v) for k, v in _entries[canon].class_aliases.items()}


def ignore_folders(name: str) -> list[str]:
    """Source folders that are not classes of the dataset (Caltech101's BACKGROUND_Google)."""
    canon = resolve(name)
    return [] if canon is None else list(_entries[canon].ignore_folders)


def provenance(name: str) -> dict:
    """Where the class names and templates of a built-in dataset come from."""
    canon = resolve(name)
    return {} if canon is None else dict(_entries[canon].provenance)


def source_specs(name: str) -> dict:
    """How the dataset's sources hold it, source kind -> settings (catalog key `sources`; {} when none):
    `torchvision` (class, marker, host, train / test / common constructor arguments, downloadable) and `hf`
    (repo, label_columns)."""
    canon = resolve(name)
    return {} if canon is None else copy.deepcopy(_entries[canon].sources)


def is_builtin(name: str) -> bool:
    canon = resolve(name)
    return canon is not None and _entries[canon].builtin
