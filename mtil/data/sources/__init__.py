"""Converters from a dataset's usual sources into (image, label) streams for the prepared-format writer.

Sources, in the order `plan()` (the factory) tries them:
- a local folder or archive (`--from`): a torchvision root holding the dataset in torchvision's layout, or an
  image folder (one sub-folder per class, optionally `train/` + `test/` (or `val/`) sub-folders, optionally
  a `--split-from` JSON split file); an archive (.zip, .tar, .tar.gz, .tgz, ...) is extracted first;
- torchvision (`download=True` only when the dataset is not already in the download folder and a network
  is reachable);
- the Hugging Face hub through `datasets.load_dataset` (honours `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`).

Labels are always mapped by class *name* onto the registry's order (so a source that sorts its classes
differently still lands on the right class); folder names may be the registry's class names, the source's own
names (`AnnualCrop`, `n01443537`, `car_side`, ...), or label indices.

Modules: `factory` (`plan`, the entry point), `base` (`Plan`, seeded splits), `labels` (label matching),
`archives`, `folders`, `torchvision`, `hf` (one per source kind), `network` (reachability, offline switches).
"""
from .archives import ARCHIVE_SUFFIXES, extract_archive, is_archive
from .base import (
    DEFAULT_SEED,
    DEFAULT_TRAIN_FRACTION,
    TEST_DIRS,
    TRAIN_DIRS,
    Plan,
    seeded_split,
)
from .factory import FILE_ORDERS, SOURCES, default_source, plan
from .folders import IMAGE_EXTENSIONS, find_split_dirs, folder_plan, scan_folder
from .hf import HF_LABEL_COLUMNS, HF_REPOS, hf_plan
from .labels import LabelMatcher, clean_classname, norm
from .network import network_available, no_network, offline_requested
from .torchvision import TORCHVISION, TVSpec, torchvision_plan, torchvision_root_of

__all__ = ["ARCHIVE_SUFFIXES", "DEFAULT_SEED", "DEFAULT_TRAIN_FRACTION", "FILE_ORDERS", "HF_LABEL_COLUMNS", "HF_REPOS",
           "IMAGE_EXTENSIONS", "SOURCES", "TEST_DIRS", "TORCHVISION", "TRAIN_DIRS", "LabelMatcher", "Plan",
           "TVSpec", "clean_classname", "default_source", "extract_archive", "find_split_dirs", "folder_plan",
           "hf_plan", "is_archive", "network_available", "no_network", "norm", "offline_requested", "plan",
           "scan_folder", "seeded_split", "torchvision_plan", "torchvision_root_of"]
