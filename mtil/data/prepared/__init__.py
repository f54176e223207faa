"""mtil's one prepared on-disk format: its reader, its writers, the staging lock and the checks.

`ROOT/<Name>/` is a `datasets.DatasetDict` written with `save_to_disk`: splits `train` and `test`, columns
`image` (`datasets.Image()`, the encoded file bytes) and `label` (`datasets.ClassLabel(names=classnames)`).
Beside the splits: `mtil.json` (how it was made: source, counts, skipped images, and the fingerprint every read
checks) and, optionally, `templates.json` (a JSON list of prompt templates, used for datasets the registry does
not know).

Writing is atomic: everything goes to `ROOT/.<Name>.tmp` and is renamed into place at the end, so a prepared
dataset is either complete or absent; an existing one is replaced only with `overwrite=True`.

    >>> from mtil.data.prepared import load_split, load_info
    >>> ds = load_split("data", "DTD", "test")       # datasets.Dataset; ds[i]["image"] is a PIL image
    >>> info = load_info("data", "DTD")              # DatasetInfo(name, classnames, templates)

Modules: `layout` (names and places), `read` (loading), `checks` (consistency checks), `fingerprint` (what
was written: row counts, class list, content hashes; checked on every read), `lock` (the staging lock), `encode`
(image cells, 8-bit RGB), `write` (the two writers).
"""
from .checks import check_consistent
from .encode import check_decodes, to_image_cell, to_rgb8
from .fingerprint import read_fingerprint, verify_content
from .layout import (
    DEFAULT_TEMPLATES,
    FORMAT_VERSION,
    META_FILE,
    SPLITS,
    TEMPLATES_FILE,
    dataset_dir,
    prepare_command,
)
from .lock import Staging, staging
from .read import (
    is_prepared,
    list_prepared,
    load_info,
    load_split,
    read_meta,
    read_templates,
)
from .write import SaveResult, save_prepared, write_items

__all__ = ["DEFAULT_TEMPLATES", "FORMAT_VERSION", "META_FILE", "SPLITS", "TEMPLATES_FILE", "SaveResult", "Staging",
           "check_consistent", "check_decodes", "dataset_dir", "is_prepared", "list_prepared", "load_info",
           "load_split", "prepare_command", "read_fingerprint", "read_meta", "read_templates", "save_prepared",
           "staging", "to_image_cell", "to_rgb8", "verify_content", "write_items"]
