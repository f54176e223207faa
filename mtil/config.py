"""YAML configuration: defaults + schema in one file, inheritance, `--set a.b=c` overrides, validation.

`configs/base.yaml` holds every key with its default value; it is also the schema. A user config is merged
over it and may name a parent with `inherit: other.yaml`, resolved relative to the folder of the file that says
it, then in the package's `configs/` (never the current directory). Files are read as YAML with two changes
(`ConfigLoader`): a key given twice in one mapping is an error naming both lines, and numbers in exponent form
without a dot (`1e-3`) are floats as in YAML 1.2 (PyYAML's YAML 1.1 reads them as strings).
Rules, checked for every value:
  * a key that is not in the schema is an error that lists the valid keys at that level;
  * a value must have the type of its default (an int is accepted for a float; `null` defaults accept anything);
    a section (a mapping default) must be a mapping, never null;
  * a mapping whose default is `{}` is free-form (e.g. per-task learning rates).
  * a value must match the allowed-values rule written in backticks at the start of its comment in the schema
    (grammar at the top of base.yaml), and the cross-key rules of CROSS_CHECKS must hold.
No YAML library in the dependency set validates against defaults this way, so this small module does it.
"""
from __future__ import annotations

import copy
import math
import os
import re
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


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a.b": value} for every leaf of a nested mapping (an empty mapping is a leaf)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolve_path(name: str | os.PathLike) -> Path:
    """Find a config file named on the command line: as given (relative to the current directory), or in the
    package's `configs/`."""
    p = Path(name).expanduser()
    for c in [p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"]:
        if os.path.isfile(c):   # not Path.is_file: a name the OS refuses (too long) is no file either
            return c
        if c == p and os.path.isdir(c):
            raise MtilError(f"config '{name}' is a directory; give a YAML file (e.g. {name}/config.yaml)")
    raise MtilError(f"config file {_short(str(name))} not found (looked in ., {CONFIG_DIR}); "
                    f"available: {', '.join(sorted(str(q.relative_to(CONFIG_DIR)) for q in CONFIG_DIR.rglob('*.yaml')))}")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MtilError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise MtilError(f"cannot read {path}: {e.strerror}") from None


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        super().__init__(f"key {key!r} given twice")
        self.key, self.first, self.second = key, first, second


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key repeated in one mapping is an error (PyYAML lets the later one win), and
    `1e-3` is a float (YAML 1.2; YAML 1.1 needs a dot, `1.0e-3`)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in lines:
                        raise DuplicateKey(key, lines[key], line)
                    lines[key] = line
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """YAML text -> Python objects, with ConfigLoader's rules (what config files and `--set` values use)."""
    return yaml.load(text, Loader=ConfigLoader)


def read_yaml(path: Path) -> dict:
    try:
        data = parse_yaml(read_text(path)) or {}
    except DuplicateKey as e:
        raise MtilError(f"{path} gives the key {e.key!r} twice in one mapping (line {e.first} and line {e.second}); "
                        f"keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MtilError(f"{path} is not valid YAML{where}: {what}") from None
    if not isinstance(data, dict):
        raise MtilError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def _parent_path(parent: Any, child: Path) -> Path:
    """The file `inherit: parent` in config `child` names: relative to child's folder, then the package's configs/."""
    if not isinstance(parent, str) or not parent.strip():
        raise MtilError(f"{child}: 'inherit' must name one config file (a string such as demo.yaml), got "
                        f"{type(parent).__name__} {parent!r}")
    p = Path(parent).expanduser()
    candidates = [p] if p.is_absolute() else [child.parent / p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"]
    for c in candidates:
        if os.path.isfile(c):   # not Path.is_file: a name the OS refuses (too long) is no file either
            return c
    raise MtilError(f"{child}: inherited config '{parent}' not found (looked in {child.parent} and {CONFIG_DIR})")


def _read_with_parents(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise MtilError(f"config inheritance loop: {' -> '.join(map(str, seen + (path.resolve(),)))}")
    data = read_yaml(path)
    if "inherit" not in data:
        return data
    parent = data.pop("inherit")
    return merge(_read_with_parents(_parent_path(parent, path), seen + (path.resolve(),)), data)


def merge(base: dict, over: dict) -> dict:
    """Recursive merge: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) and out[k] else v
    return out


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


def _short(value: Any, limit: int = 120) -> str:
    """repr(value), cut to `limit` characters (a 5,000-character path stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 30]}...{text[-20:]} ({len(text)} characters)"


def validate(data: dict, schema: dict, where: str = "", rules: dict | None = None) -> dict:
    """Check `data` against `schema` (both plain dicts) and its `rules`; return data with float defaults coerced."""
    rules = rules or {}
    out = {}
    for key, value in data.items():
        full = f"{where}{key}"
        if key not in schema:
            valid = ", ".join(sorted(schema)) or "(none)"
            raise MtilError(f"unknown config key '{full}'; valid keys{' under ' + repr(where[:-1]) if where else ''}: {valid}")
        default = schema[key]
        if isinstance(default, dict) and default and not isinstance(value, dict):
            raise MtilError(f"config key '{full}' is a section (keys: {', '.join(default)}); give its keys, e.g. "
                            f"--set {full}.{next(iter(default))}=..., not "
                            f"{'null' if value is None else type(value).__name__ + ' ' + _short(value)}")
        if not _type_ok(default, value):
            rule = rules.get(full)
            raise MtilError(f"config key '{full}' must be {type(default).__name__} (default {default!r}), "
                            f"got {type(value).__name__} {_short(value)}{'; allowed: ' + describe(rule) if rule else ''}")
        if isinstance(default, dict) and default:
            value = validate(value, default, full + ".", rules)
        else:
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            check_rule(full, value, rules.get(full))
        out[key] = value
    return out


# ---- allowed-value rules: a backticked rule at the start of each key's comment in the schema --------------------

_KEY_LINE = re.compile(r"^( *)([A-Za-z_][\w-]*):(.*)$")
_INTERVAL = re.compile(r"^(int|float)?\s*([\[(])\s*([^,\s]+)\s*,\s*([^\]\)\s]+)\s*([\])])$")


def schema_rules(path: Path) -> dict[str, str | None]:
    """Every leaf key of a schema file (dotted) -> its rule text, or None where the comment has no rule."""
    rules: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in read_text(path).splitlines():
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, _, comment = rest.partition("#")
        full = ".".join([k for _, k in stack] + [key])
        if value.strip() == "":                      # a section: its keys follow, indented
            stack.append((indent, key))
            continue
        comment = comment.strip()
        rules[full] = comment[1:].split("`", 1)[0].strip() if comment.startswith("`") else None
    return rules


def _split_alternatives(rule: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in rule:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_interval(alt: re.Match, value: Any) -> bool:
    kind, left, lo, hi, right = alt.groups()
    if not _number(value) or (kind == "int" and not isinstance(value, int)) or math.isnan(value):
        return False
    lo_v, hi_v = float(lo), float(hi)
    above = value >= lo_v if left == "[" else value > lo_v
    below = value <= hi_v if right == "]" else value < hi_v
    return above and below


def _block_range(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
            for v in value) and 0 <= value[0] < value[1])


def _dataset_name(value: Any) -> bool:
    from .data import registry
    return registry.valid_name(value)


_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")

# named checks for `@name` rules
CHECKS = {"block_range": _block_range, "dataset_name": _dataset_name,
          "device": lambda v: isinstance(v, str) and _DEVICE.match(v) is not None}
_DESCRIBE = {"block_range": "[start, stop) with 0 <= start < stop",
             "dataset_name": "a dataset name (letters, digits and _ . + -, starting with a letter or digit; no path)",
             "device": "auto | cpu | cuda | cuda:N"}


def matches(rule: str, value: Any) -> bool:
    """Whether `value` satisfies a rule written in the schema's notation (see the top of base.yaml)."""
    for alt in _split_alternatives(rule):
        if alt == "null":
            ok = value is None
        elif alt == "bool":
            ok = isinstance(value, bool)
        elif alt == "str":
            ok = isinstance(value, str) and value.strip() != ""
        elif alt.startswith("list(") and alt.endswith(")"):
            ok = isinstance(value, list) and len(value) > 0 and all(matches(alt[5:-1], v) for v in value)
        elif alt.startswith("map(") and alt.endswith(")"):
            ok = isinstance(value, dict) and all(isinstance(k, str) and matches(alt[4:-1], v) for k, v in value.items())
        elif alt.startswith("@"):
            if alt[1:] not in CHECKS:
                raise ValueError(f"unknown named check {alt} in a schema rule")
            ok = CHECKS[alt[1:]](value)
        elif (m := _INTERVAL.match(alt)) is not None:
            ok = _in_interval(m, value)
        else:
            ok = isinstance(value, str) and value == alt
        if ok:
            return True
    return False


def describe(rule: str) -> str:
    return re.sub(r"@(\w+)", lambda m: _DESCRIBE.get(m.group(1), m.group(0)), rule)


def check_rule(key: str, value: Any, rule: str | None) -> None:
    if rule is not None and not matches(rule, value):
        raise MtilError(f"config key '{key}' = {_short(value)} is not allowed; allowed: {describe(rule)}")


def _cross_base(cfg: dict) -> None:
    """Rules that involve several keys of base.yaml."""
    moe_, pol, data, train = cfg["moe"], cfg["policy"], cfg["data"], cfg["train"]
    n = moe_["num_experts"]
    if moe_["top_k"] > n:
        raise MtilError(f"config key 'moe.top_k' = {moe_['top_k']} is not allowed; allowed: at most "
                        f"moe.num_experts = {n}")
    count = pol["freeze"]["count"]
    if count is not None and count > n:
        raise MtilError(f"config key 'policy.freeze.count' = {count} is not allowed; allowed: null or at most "
                        f"moe.num_experts = {n}")
    grow = pol["grow"]
    if pol["name"] == "grow":
        # grow sizes its own slots (granularity x growth stages, mtil/policies/grow.py); only max_experts caps them
        cap = grow["max_experts"]
        if cap is not None and grow["granularity"] > cap:
            raise MtilError(f"config key 'policy.grow.granularity' = {grow['granularity']} is not allowed; allowed: "
                            f"at most policy.grow.max_experts = {cap}")
    if cfg["eval"]["mode"] == "task-free" and moe_["router"] != "shared":
        raise MtilError("config key 'eval.mode' = 'task-free' is not allowed with moe.router = "
                        f"{moe_['router']!r}; allowed: task-free with moe.router=shared (per-task routers need a task "
                        "identity: use eval.mode=selector or oracle)")
    lists = {"data.order": data["order"], "demo.domains": cfg["demo"]["domains"],
             "demo.pretrain.domains": cfg["demo"]["pretrain"].get("domains", [])}
    for key, names in lists.items():
        spellings: dict[str, list[str]] = {}
        for d in names:
            spellings.setdefault(dataset_key(d), []).append(str(d))
        dups = [" = ".join(s) if len(set(s)) > 1 else s[0] for s in spellings.values() if len(s) > 1]
        if dups:
            raise MtilError(f"config key '{key}' = {names!r} is not allowed; allowed: each dataset once, "
                            f"whatever its spelling (repeated: {', '.join(dups)})")
    # per-task lr tables are per dataset, as the published scripts give them (MoE-Adapters' 11 lrs, ZSCL's 5e-5 for
    # Aircraft and MNIST), whatever the order: a registered dataset not in data.order is unused (so a shipped config
    # runs any subset: --set data.order=[MNIST,EuroSAT]); any other name is a typo
    from .data import registry
    order = {dataset_key(d) for d in data["order"]}
    for key, table in (("train.lr_per_task", train["lr_per_task"]),
                       ("method.finetune.lr_per_task", cfg["method"]["finetune"]["lr_per_task"])):
        stray = sorted(n for n in table if dataset_key(n) not in order and registry.resolve(str(n)) is None)
        if stray:
            raise MtilError(f"config key '{key}' names {', '.join(stray)}, neither in data.order nor a registered "
                            f"dataset; allowed: {', '.join(map(str, data['order']))} or a registered dataset "
                            "(mtil prepare --list)")


def dataset_key(name: Any) -> str:
    """The one rule that says two dataset names are the same dataset: registered aliases resolve, then case and
    punctuation are ignored (`cars`, `Stanford-Cars` and `StanfordCars` are one dataset)."""
    from .data import registry
    return registry.key(registry.resolve(str(name)) or str(name))


def _cross_plasticity(cfg: dict) -> None:
    """Rules that involve several keys of plasticity/base.yaml."""
    hidden, chunks = cfg["methods"]["net2wider"]["hidden"], cfg["study"]["chunks"]
    if hidden < chunks:
        raise MtilError(f"config key 'methods.net2wider.hidden' = {hidden} is not allowed; allowed: at least "
                        f"study.chunks = {chunks} (its width at chunk 1 is int(hidden / chunks), 0 below that)")


# schema file name -> cross-key check run on the merged config
CROSS_CHECKS = {"base.yaml": _cross_base, "plasticity/base.yaml": _cross_plasticity}


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise MtilError(f"override '{text}' must look like key.path=value (e.g. train.lr=1e-3)")
    key, raw = text.split("=", 1)
    try:
        value = parse_yaml(raw) if raw != "" else ""
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
    user = _read_with_parents(resolve_path(path)) if path is not None else {}
    return from_dict(apply_overrides(user, overrides), schema)


def from_dict(data: dict, schema: str = "base.yaml") -> Config:
    """Validate an in-memory mapping (e.g. a run's saved config.yaml) against a schema, its rules and cross-checks."""
    schema_path = resolve_path(schema)
    schema_data = read_yaml(schema_path)
    merged = merge(schema_data, validate(unwrap(data), schema_data, rules=schema_rules(schema_path)))
    cross = CROSS_CHECKS.get(str(schema_path.relative_to(CONFIG_DIR)) if schema_path.is_relative_to(CONFIG_DIR)
                             else None)
    if cross is not None:
        cross(merged)
    return wrap(merged)


def dump(cfg: dict) -> str:
    return yaml.safe_dump(unwrap(cfg), sort_keys=False)
