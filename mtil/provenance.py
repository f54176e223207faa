"""Provenance: what produced a result, recorded in every results.json and checkpoint, and checked before a result
is resumed, reused or averaged.

A record (`record(cfg, datasets)`) holds
  * `config`: the resolved config the run was started with, and `config_sha256`: the hash of its *identity*, the
    keys that can change a number. Left out of the identity: where things lie or how they were found (LOCATIONS:
    `data.root`, `model.pretrained`, `data.demo`; their content is recorded instead, so a data root or a cache
    moved to another path keeps its provenance) and the keys that change no number (NEUTRAL; `eval.batch_size`
    too, unless the task selector decides per evaluation batch; the baselines' `method.<baseline>` settings in a
    run of the MoE adapters, which never reads them);
  * `backbone`: what `model.pretrained` loaded: the sha256 of the weights file (of every file of a `local-dir:`
    folder), the open_clip tag, or random initialisation, and the activation the model was built with;
  * `datasets`: per dataset of `data.order`, the fingerprint `mtil prepare` recorded (row counts, class list and
    content hashes per split; `mtil.data.prepared.fingerprint`).
Two records describe the same computation when identity, backbone and datasets agree. `differences(old, new)`
names what does not (`train.lr: 0.01 there, 0.05 now`); `--resume`, compare's cell reuse and `mtil report`'s
grouping all decide with it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import config
from .errors import MtilError

log = logging.getLogger(__name__)

FORMAT = 1
LOCATIONS = ("data.root", "model.pretrained", "data.demo")   # data.demo: assets built into the cache
NEUTRAL = ("data.num_workers", "eval.pixel_cache_mb", "output.plots", "train.log_every")
GROUPING_IGNORES = ("seed", "threads")   # what may differ between the seeds of one row of `mtil report`
_CHUNK = 1 << 20
_file_hashes: dict[tuple, str] = {}      # (path, size, mtime) -> sha256, so a grid hashes its backbone once


def identity(cfg: Mapping, ignore: Iterable[str] = ()) -> dict:
    """The flattened config keys that can change a number (see the module docstring), minus `ignore`."""
    flat = config.flatten(config.unwrap(dict(cfg)))
    drop = set(LOCATIONS) | set(NEUTRAL) | set(ignore)
    if not (flat.get("eval.mode") == "selector" and flat.get("selector.mode") == "batch"):
        drop.add("eval.batch_size")   # one decision per evaluation batch is the only way it changes a number
    if flat.get("method.name") == "moe":   # the MoE adapters read no baseline's settings
        drop |= {k for k in flat if k.startswith("method.") and k != "method.name"}
    return {k: v for k, v in flat.items() if k not in drop and not any(k.startswith(d + ".") for d in drop)}


def sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _file_hashes[key] = h.hexdigest()
    return _file_hashes[key]


def backbone(model_cfg: Mapping) -> dict:
    """What `model.pretrained` loads, by content: a file's sha256, a local-dir folder's files' sha256, an open_clip
    tag (its weights are open_clip's, named by the tag), or random initialisation; and the activation the model is
    built with for those weights (`mtil.model.backbone.activation_for`)."""
    from .model.backbone import activation_for
    pretrained = model_cfg.get("pretrained")
    act = activation_for(str(model_cfg["name"]), pretrained, model_cfg.get("activation", "auto"))
    if pretrained in (None, ""):
        return {"kind": "random-init", "activation": act}
    text = str(pretrained)
    if text.startswith("local-dir:"):
        folder = Path(text[len("local-dir:"):]).expanduser()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return {"kind": "local-dir", "sha256": sha256({str(p.relative_to(folder)): file_sha256(p) for p in files}),
                "activation": act}
    path = Path(text).expanduser()
    if os.path.isfile(path):
        return {"kind": "file", "sha256": file_sha256(path), "bytes": path.stat().st_size, "activation": act}
    return {"kind": "open_clip tag", "tag": text, "activation": act}


def describe_backbone(fact: Mapping | None) -> str:
    if not fact:
        return "unknown"
    if fact.get("kind") in ("file", "local-dir"):
        what = f"{fact['kind']} sha256 {fact['sha256'][:12]}"
    else:
        what = f"tag {fact['tag']}" if fact.get("kind") == "open_clip tag" else str(fact.get("kind"))
    return f"{what} ({fact.get('activation', 'activation not recorded')})"


def datasets(data_cfg: Mapping, names: Iterable[str]) -> dict:
    """The fingerprint of each prepared dataset (`mtil.data.prepared.read_fingerprint`; checked, not re-hashed)."""
    from .data import prepared
    return {str(n): prepared.read_fingerprint(data_cfg["root"], n) for n in names}


def _content(fp: Mapping) -> dict:
    """What of a dataset fingerprint is content (not how it was obtained)."""
    return {"classes": fp.get("classes_sha256"),
            "splits": {s: {"rows": e.get("rows"), "sha256": e.get("sha256")} for s, e in fp.get("splits", {}).items()}}


def _version() -> str | None:
    try:
        return metadata.version("mtil")
    except metadata.PackageNotFoundError:
        return None


def record(cfg: Mapping, dataset_fingerprints: Mapping | None = None) -> dict:
    """The provenance record of a run of `cfg` (its datasets' fingerprints given, or read from the data root)."""
    plain = config.unwrap(dict(cfg))
    fps = dataset_fingerprints if dataset_fingerprints is not None else datasets(plain["data"], plain["data"]["order"])
    return {"format": FORMAT, "config_sha256": sha256(identity(plain)), "config": plain,
            "backbone": backbone(plain["model"]),
            "datasets": {n: _content(fp) for n, fp in fps.items()}, "mtil": _version()}


def config_record(cfg: Mapping) -> dict:
    """The record of a run that loads no backbone and reads no dataset (`mtil rl`): its config, hashed whole
    (every key of an RL config acts on its numbers or files, `train.log_every` included)."""
    plain = config.unwrap(dict(cfg))
    return {"format": FORMAT, "config_sha256": sha256(config.flatten(plain)), "config": plain, "backbone": None,
            "datasets": {}, "mtil": _version()}


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:45] + "..." + text[-10:]


def differences(old: Mapping, new: Mapping, ignore: Iterable[str] = (), unread: Iterable[tuple] = ()) -> list[str]:
    """What differs between two records ("there" = `old`, "now" = `new`): config keys of the identity (minus
    `ignore`), the backbone, each dataset's rows / classes / content, except the (dataset, split) pairs of
    `unread` (nothing computed so far has read them)."""
    unread = set(unread)
    out = []
    a, b = identity(old["config"], ignore), identity(new["config"], ignore)
    out += [f"{k}: {_fmt(a.get(k))} there, {_fmt(b.get(k))} now" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not (a.get(k) in ({}, None) and b.get(k) in ({}, None))]
    if old.get("backbone") != new.get("backbone"):
        out.append(f"backbone (model.pretrained): {describe_backbone(old.get('backbone'))} there, "
                   f"{describe_backbone(new.get('backbone'))} now")
    for name in sorted(set(old.get("datasets", {})) & set(new.get("datasets", {}))):
        x, y = old["datasets"][name], new["datasets"][name]
        read = sorted(sp for sp in set(x["splits"]) | set(y["splits"]) if (name, sp) not in unread)
        if x == y or not read:
            continue
        if x["classes"] != y["classes"]:
            out.append(f"dataset {name}: another class list there than now")
            continue
        for split in read:
            p, q = x["splits"].get(split, {}), y["splits"].get(split, {})
            if p.get("rows") != q.get("rows"):
                out.append(f"dataset {name}: {split} split {p.get('rows')} rows there, {q.get('rows')} now")
            elif p != q:
                out.append(f"dataset {name}: {split} split content sha256 {str(p.get('sha256'))[:12]} there, "
                           f"{str(q.get('sha256'))[:12]} now")
    return out


def summary(diffs: list[str], shown: int = 3) -> str:
    """The first differences, for a one-line message."""
    return "; ".join(diffs[:shown]) + (f"; and {len(diffs) - shown} more" if len(diffs) > shown else "")


def group_key(rec: Mapping) -> str:
    """What `mtil report` groups by: identity without seed and threads, backbone and dataset content."""
    return sha256({"config": identity(rec["config"], GROUPING_IGNORES), "backbone": rec.get("backbone"),
                   "datasets": rec.get("datasets")})


def group_config(rec: Mapping) -> dict:
    """The flat identity `mtil report` shows a group by, with the backbone and datasets as pseudo-keys."""
    out = identity(rec["config"], GROUPING_IGNORES)
    out["backbone"] = describe_backbone(rec.get("backbone"))
    for name, fp in (rec.get("datasets") or {}).items():
        out[f"dataset.{name}"] = sha256(fp)[:12]
    return out


def of_results(results: Mapping, where: str | os.PathLike) -> dict | None:
    """The record a results.json holds (None when it holds none: written by an earlier mtil)."""
    rec = results.get("provenance")
    if rec is None:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict) or "backbone" not in rec:
        raise MtilError(f"{where} holds a malformed provenance record; re-run into a new --out")
    return rec
