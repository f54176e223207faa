"""YAML configuration: defaults + schema in one file, inheritance, `--set a.b=c` overrides, validation.

`configs/base.yaml` holds every key with its default value; it is also the schema. A user config is merged
over it and may name a parent with `inherit: other.yaml` (resolved relative to the file, then `configs/`).
Rules, checked for every value:
  * a key that is not in the schema is an error that lists the valid keys at that level;
  * a value must have the type of its default (an int is accepted for a float; `null` defaults accept anything);
  * a mapping whose default is `{}` is free-form (e.g. per-task learning rates).
No YAML library in the dependency set validates against defaults this way, so this small module does it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import MtilError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class Config(dict):
    """A dict with attribute access (`cfg.train.lr`); nested mappings are Configs too."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __deepcopy__(self, memo):
        return wrap(copy.deepcopy(unwrap(self), memo))


def wrap(obj: Any) -> Any:
    if isinstance(obj, dict):
        return Config({k: wrap(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [wrap(v) for v in obj]
    return obj


def unwrap(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: unwrap(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unwrap(v) for v in obj]
    return obj


def resolve_path(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """Find a config file: as given, relative to another config, or in the package's `configs/`."""
    p = Path(name).expanduser()
    candidates = [p]
    if relative_to is not None:
        candidates.append(relative_to / p)
    candidates += [CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise MtilError(f"config file '{name}' not found (looked in ., {CONFIG_DIR}); "
                    f"available: {', '.join(sorted(str(q.relative_to(CONFIG_DIR)) for q in CONFIG_DIR.rglob('*.yaml')))}")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MtilError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise MtilError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def _read_with_parents(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise MtilError(f"config inheritance loop: {' -> '.join(map(str, seen + (path,)))}")
    data = read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    return merge(_read_with_parents(resolve_path(parent, path.parent), seen + (path,)), data)


def merge(base: dict, over: dict) -> dict:
    """Recursive merge: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) and out[k] else v
    return out


def _as_float(value: Any) -> Any:
    """PyYAML reads `5e-3` (no dot) as a string; accept it where a float is expected."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def validate(data: dict, schema: dict, where: str = "") -> dict:
    """Check `data` against `schema` (both plain dicts); return data with float defaults coerced."""
    out = {}
    for key, value in data.items():
        full = f"{where}{key}"
        if key not in schema:
            valid = ", ".join(sorted(schema)) or "(none)"
            raise MtilError(f"unknown config key '{full}'; valid keys{' under ' + repr(where[:-1]) if where else ''}: {valid}")
        default = schema[key]
        if isinstance(default, float):
            value = _as_float(value)
        if not _type_ok(default, value):
            raise MtilError(f"config key '{full}' must be {type(default).__name__} (default {default!r}), "
                            f"got {type(value).__name__} {value!r}")
        if isinstance(default, dict) and default and isinstance(value, dict):
            value = validate(value, default, full + ".")
        elif isinstance(default, dict) and isinstance(value, dict):
            value = {k: _as_float(v) for k, v in value.items()}
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise MtilError(f"override '{text}' must look like key.path=value (e.g. train.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def load(path: str | os.PathLike | None = None, overrides: Iterable[str] = (), schema: str = "base.yaml") -> Config:
    """Load a config: schema defaults <- inherited parents <- file <- overrides, validated."""
    schema_data = read_yaml(resolve_path(schema))
    user = _read_with_parents(resolve_path(path)) if path is not None else {}
    user = apply_overrides(user, overrides)
    user = validate(user, schema_data)
    return wrap(merge(schema_data, user))


def from_dict(data: dict, schema: str = "base.yaml") -> Config:
    """Validate an in-memory mapping (e.g. a run's saved config.yaml) against a schema."""
    schema_data = read_yaml(resolve_path(schema))
    return wrap(merge(schema_data, validate(unwrap(data), schema_data)))


def dump(cfg: dict) -> str:
    return yaml.safe_dump(unwrap(cfg), sort_keys=False)
