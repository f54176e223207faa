"""The sources' factory: `plan()` chooses a dataset's source (a folder or archive, torchvision, the hub) and
returns that source's `Plan`."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ...errors import MtilError
from .. import registry
from .archives import extract_archive, is_archive
from .base import DEFAULT_SEED, DEFAULT_TRAIN_FRACTION, Plan
from .folders import folder_plan
from .hf import HF_REPOS, hf_plan
from .torchvision import LINK_ROOT, TORCHVISION, torchvision_plan, torchvision_root_of

log = logging.getLogger(__name__)


SOURCES = ("auto", "folder", "torchvision", "hf")
#: SUN397's file order before the seeded split: sorted by path, or torchvision's listing (the file system's).
FILE_ORDERS = ("sorted", "listing")


def default_source(name: str) -> str:
    """The source `mtil prepare NAME` uses without --from / --source."""
    canon = registry.resolve(name)
    if canon in TORCHVISION and TORCHVISION[canon].downloadable:
        return "torchvision"
    if canon in HF_REPOS:
        return "hf"
    return "folder"


def plan(name: str, data_root: str | os.PathLike, work_dir: Path, *, src: str | os.PathLike | None = None,
         source: str = "auto", split_from: str | os.PathLike | None = None, download_dir: str | None = None,
         hf_repo: str | None = None, hf_config: str | None = None, cache_dir: str | None = None,
         index_base: int = 0, train_fraction: float = DEFAULT_TRAIN_FRACTION, seed: int = DEFAULT_SEED,
         file_order: str = "sorted") -> Plan:
    """Choose the source of dataset `name` and return its plan (see the module docstring). `file_order`
    (FILE_ORDERS) is SUN397's file order before its seeded split, read through torchvision."""
    canon = registry.resolve(name)
    if source not in SOURCES:
        raise MtilError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    if file_order not in FILE_ORDERS:
        raise MtilError(f"--file-order must be one of {', '.join(FILE_ORDERS)}, not {file_order!r}")
    if file_order != "sorted" and canon != "SUN397":
        raise MtilError(f"--file-order applies to SUN397 only (the one dataset torchvision lists in the file "
                        f"system's order), not {canon or name}")
    if source == "auto":
        source = "folder" if src is not None else ("hf" if hf_repo else default_source(name))
    if source in ("torchvision", "hf") and canon is None and not (source == "hf" and hf_repo):
        raise MtilError(f"'{name}' is not a registered dataset ({', '.join(registry.names())}); prepare it from "
                        f"an image folder with `mtil prepare {name} --root {data_root} --from DIR`")
    if source == "folder":
        if src is None:
            raise MtilError(f"{name} has no download source; run `mtil prepare {name} --root {data_root} --from DIR` "
                            "with DIR holding one sub-folder of images per class")
        path = Path(src).expanduser()
        if not path.exists():
            raise MtilError(f"--from '{path}' does not exist")
        if is_archive(path):
            path = extract_archive(path, work_dir / "extracted")
        if canon is not None and split_from is None:
            tv_root = torchvision_root_of(canon, path, work_dir)
            if tv_root is not None:
                log.info("%s: found torchvision's layout under %s", canon, tv_root)
                return _shown(torchvision_plan(canon, tv_root, False, data_root, train_fraction, seed, file_order),
                              tv_root, work_dir)
        if file_order != "sorted":
            raise MtilError(f"--file-order {file_order} needs SUN397 in torchvision's layout or its official files "
                            f"(a folder holding ClassName.txt); '{path}' is read as image folders, in sorted order")
        plan_ = folder_plan(name, path, Path(split_from) if split_from else None, index_base, train_fraction, seed)
        spec = TORCHVISION.get(canon or "")
        if spec is not None and spec.train is not None and "seeded" in plan_.description:
            plan_.notes.append(f"not {canon}'s reference split (its official split files: {spec.expected()}); "
                               "a seeded split of these folders instead")
        return plan_
    if source == "torchvision":
        if canon not in TORCHVISION:
            raise MtilError(f"torchvision has no {canon}; use --source hf or --from DIR")
        root = Path(download_dir).expanduser() if download_dir else Path(data_root) / ".downloads"
        if src is not None:
            found = torchvision_root_of(canon, Path(src).expanduser(), work_dir)
            if found is None:
                raise MtilError(f"'{src}' does not hold {canon} in torchvision's layout "
                                f"(no {TORCHVISION[canon].marker}) nor {TORCHVISION[canon].expected()}")
            root = found
        return _shown(torchvision_plan(canon, root, True, data_root, train_fraction, seed, file_order), root,
                      work_dir)
    if file_order != "sorted":
        raise MtilError(f"--file-order {file_order} applies to SUN397 read through torchvision, not --source hf")
    return hf_plan(canon or name, hf_repo, data_root, cache_dir, hf_config, train_fraction, seed)


def _shown(plan_: Plan, root: Path, work_dir: Path) -> Plan:
    """The plan, its description naming the user's folder where the torchvision root is a link made in `work_dir`."""
    if root == work_dir / LINK_ROOT:
        base = TORCHVISION[plan_.name].base
        plan_.description = plan_.description.replace(str(root), f"the official files in {(root / base).resolve()}")
    return plan_
