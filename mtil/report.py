"""Tables over run directories: Transfer / Avg / Last / BWT / Forgetting (mean ± std over seeds) beside published rows.

Runs whose resolved configs differ only in `seed` (and paths) form one group; a group of several seeds shows
mean ± sample std (ddof=1). Published rows (`configs/references.yaml`, ViT-B/16) are those of the MTIL order the
runs use (none for another stream, such as the demo's), and are always labelled as published.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .config import CONFIG_DIR
from .errors import MtilError

METRICS = ("transfer", "avg", "last", "bwt", "forgetting")   # published rows have the first three
HEADERS = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "bwt": "BWT", "forgetting": "Forgetting"}
IGNORED_KEYS = ("seed", "data.root", "model.pretrained", "data.num_workers", "eval.batch_size", "output.plots")


@dataclass
class Group:
    label: str
    tasks: list[str]
    runs: list[dict] = field(default_factory=list)   # results.json contents
    dirs: list[Path] = field(default_factory=list)

    def values(self, key: str, dataset: str | None = None) -> np.ndarray:
        if dataset is None:
            return np.array([r[key] for r in self.runs], dtype=float)
        return np.array([r["per_dataset"][dataset][key] if r["per_dataset"][dataset][key] is not None else np.nan
                         for r in self.runs], dtype=float)


def _load(path: Path) -> tuple[dict, dict]:
    try:
        results = json.loads((path / "results.json").read_text())
        cfg = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise MtilError(f"cannot read run directory {path} ({type(e).__name__}); is it the --out of `mtil run`?") from None
    return results, cfg


def _strip(cfg: dict) -> str:
    """The config as a canonical string, without the keys that may differ within one group of seeds."""
    cfg = json.loads(json.dumps(cfg))
    for dotted in IGNORED_KEYS:
        *parents, leaf = dotted.split(".")
        node = cfg
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return json.dumps(cfg, sort_keys=True)


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories given directly or found (one level of nesting at most) under the given folders."""
    found = []
    for p in map(Path, paths):
        if (p / "results.json").exists():
            found.append(p)
        elif p.is_dir():
            found += sorted(q.parent for q in p.glob("*/results.json"))
        else:
            raise MtilError(f"{p} is not a run directory (no results.json); give the --out of `mtil run`")
        if p.is_dir() and not found:
            raise MtilError(f"no run directories (with results.json) under {p}")
    return found


def group_runs(paths: list[str | Path]) -> list[Group]:
    groups: dict[str, Group] = {}
    for d in run_dirs(paths):
        results, cfg = _load(d)
        if not results.get("complete"):
            continue
        key = _strip(cfg) + json.dumps(results["tasks"])
        if key not in groups:
            label = d.name.split("-seed")[0] if "-seed" in d.name else d.name
            groups[key] = Group(label, results["tasks"])
        groups[key].runs.append(results)
        groups[key].dirs.append(d)
    if not groups:
        raise MtilError(f"no finished runs among {', '.join(map(str, paths))}; finish them with `mtil run ... --resume`")
    labels = [g.label for g in groups.values()]
    for g in groups.values():
        if labels.count(g.label) > 1:
            g.label = f"{g.label} ({g.runs[0]['policy']}, {g.runs[0]['eval_mode']})"
    return list(groups.values())


def references(tasks: list[str]) -> tuple[str, dict]:
    """The published rows of the MTIL order these tasks are ({} for any other stream: not comparable)."""
    data = yaml.safe_load((CONFIG_DIR / "references.yaml").read_text())
    for name, entry in data.items():
        if entry["tasks"] == tasks:
            return name, entry["rows"]
    return "", {}


def fmt(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def table(groups: list[Group]) -> list[dict]:
    """Rows of the main table: published references, then each group (with its number of seeds)."""
    order, refs = references(groups[0].tasks)
    rows = [{"method": f"{name} (published, ViT-B/16, {order})", "seeds": None,
             **{m: "" for m in METRICS}, **{m: v for m, v in zip(METRICS, vals)}} for name, vals in refs.items()]
    for g in groups:
        row = {"method": g.label, "seeds": len(g.runs)}
        for m in METRICS:
            v = g.values(m)
            row[m] = fmt(v)
            row[f"{m}_mean"], row[f"{m}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        rows.append(row)
    return rows


def per_dataset(groups: list[Group]) -> list[dict]:
    rows = []
    for g in groups:
        for key in ("transfer", "last"):
            rows.append({"method": g.label, "metric": key, **{d: fmt(g.values(key, d)) for d in g.tasks}})
    return rows


def render(paths: list[str | Path], fmt_name: str = "md") -> str:
    groups = group_runs(paths)
    main, datasets = table(groups), per_dataset(groups)
    if fmt_name == "json":
        return json.dumps({"table": main, "per_dataset": datasets,
                           "runs": {g.label: [str(d) for d in g.dirs] for g in groups}}, indent=2)
    if fmt_name == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["method", "seeds", *METRICS])
        for r in main:
            writer.writerow([r["method"], r["seeds"] or "", *(r[m] for m in METRICS)])
        writer.writerow([])
        writer.writerow(["method", "metric", *groups[0].tasks])
        for r in datasets:
            writer.writerow([r["method"], r["metric"], *(r.get(d, "") for d in groups[0].tasks)])
        return buf.getvalue()
    if fmt_name != "md":
        raise MtilError(f"unknown report format '{fmt_name}'; use md, csv or json")
    lines = ["| method | seeds | " + " | ".join(HEADERS[m] for m in METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for r in main:
        lines.append(f"| {r['method']} | {r['seeds'] or ''} | " + " | ".join(str(r[m]) for m in METRICS) + " |")
    tasks = groups[0].tasks
    lines += ["", "| method | metric | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for r in datasets:
        lines.append(f"| {r['method']} | {r['metric']} | " + " | ".join(r.get(d, "-") for d in tasks) + " |")
    return "\n".join(lines)
