"""Tables over run directories: Transfer / Avg / Last / BWT / Forgetting (mean ± std over seeds), trainable
parameters and training time, beside published rows.

Every number is recomputed from each run's accuracy matrix (`metrics.summarize`), never read from the summary
values stored beside it, and rounded as the published tables are (ZSCL's `np.around(x, 1)`: x * 10 rounded half
to even, so a transfer of 65.35 prints 65.4). A matrix entry outside [0, 100] (NaN included) is refused. Runs form
one group when their provenance records (`mtil.provenance`, in results.json) agree on everything but the seed
(and `threads`): config identity, backbone content, dataset content; never by folder name. A run without a record
(written by an earlier mtil) is grouped by its config.yaml, paths compared as paths, and one without either is
reported alone; the output says so in a note. A group of several seeds shows mean ± sample std (ddof=1); its
`seeds` is the number of runs its numbers come from. Each task stream gets its own tables; published rows
(`mtil/references.yaml`, ViT-B/16) are those of the MTIL order the stream is (none for another stream, such as
the demo's), and are always labelled as published: each right above the group that reproduces it (`method.name`,
and `policy.name` for the MoE method: references.yaml's `methods`), the others first. "Trainable" is the mean over
tasks of the parameters each task's optimizer could change (`params[].trainable`), "Train time" the wall time of
training summed over tasks (`train_seconds`); both "-" for runs that lack them. The per-dataset table has a
Transfer, an Avg and a Last row per group and an Average column, as ZSCL's and MoE-Adapters' appendices print.

A run directory given twice (or given and found again under a given folder) counts once. A run given on the
command line that is unfinished, or a path that holds no run, is an error; unfinished runs found under a folder
are left out and named.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from . import metrics, protocol, provenance, rundir
from .config import flatten
from .errors import MtilError
from .rundir.layout import RunDir
from .rundir.read import OtherKind

log = logging.getLogger(__name__)

METRICS = ("transfer", "avg", "last", "bwt", "forgetting")   # published rows have the first three
COSTS = ("trainable", "train_seconds")                        # per run: mean over tasks, sum over tasks
HEADERS = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "bwt": "BWT", "forgetting": "Forgetting",
           "trainable": "Trainable", "train_seconds": "Train time"}
PER_DATASET = ("transfer", "avg", "last")
PROTOCOL = ("order", "task_identity", "shots", "backbone", "activation", "settings")   # columns beside each row
PROTOCOL_HEADERS = {"order": "Order", "task_identity": "Task identity", "shots": "Shots", "backbone": "Backbone",
                    "activation": "Activation", "settings": "Settings"}


@dataclass
class Group:
    label: str
    tasks: list[str]
    config: dict = field(default_factory=dict)          # flat: what the runs share (provenance.group_config)
    runs: list[dict] = field(default_factory=list)      # results.json contents, metrics recomputed from the matrix
    dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # runs grouped without a provenance record, and how
    protocol: dict = field(default_factory=dict)        # mtil.protocol of its runs (they agree on protocol.key)

    def values(self, key: str, dataset: str | None = None) -> np.ndarray:
        if dataset is None:
            return np.array([np.nan if r.get(key) is None else r[key] for r in self.runs], dtype=float)
        return np.array([r["per_dataset"][dataset][key] if r["per_dataset"][dataset][key] is not None else np.nan
                         for r in self.runs], dtype=float)


def run_dirs(paths: list[str | Path]) -> tuple[dict[Path, dict], list[Path]]:
    """({finished run directory: its results.json}, each once, in the order given; unfinished ones found under
    given folders)."""
    found: dict[Path, dict] = {}
    skipped, seen = [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise MtilError(f"{p} does not exist; give the --out of `mtil run` or a folder of run directories")
        if RunDir(p).finished():
            results = rundir.read_results(p)
            if not results.get("complete"):
                raise MtilError(f"{p} is an unfinished run ({len(results['matrix'])} of {len(results['tasks'])} "
                                f"tasks); finish it with `mtil run --out {p} --resume` or leave it out")
            candidates = [p]
        elif p.is_dir():
            candidates = rundir.find_runs(p)
            if not candidates:
                raise MtilError(f"{p} is not a run directory and holds none (no results.json below it); "
                                f"give the --out of `mtil run`")
        else:
            raise MtilError(f"{p} is not a run directory (a file); give the --out of `mtil run`")
        for d in candidates:
            if d.resolve() in seen:
                continue
            seen.add(d.resolve())
            try:
                results = rundir.read_results(d)
            except OtherKind as e:   # found under a folder (one given directly has failed above)
                log.warning("report: %s; left out", e)
                continue
            if results.get("complete"):
                found[d] = results
            else:
                skipped.append(d)
    for d in skipped:
        log.warning("report: %s is unfinished, left out (finish it with `mtil run --out %s --resume`)", d, d)
    if not found:
        raise MtilError(f"no finished runs among {', '.join(map(str, paths))}; finish them with "
                        f"`mtil run ... --resume`")
    return found, skipped


def recomputed(results: dict) -> dict:
    """results.json with every metric recomputed from its matrix, and its costs (COSTS) per run."""
    trainable = [p.get("trainable") for p in results.get("params") or []]
    seconds = results.get("train_seconds")
    costs = {"trainable": float(np.mean(trainable)) if trainable and None not in trainable else None,
             "train_seconds": float(sum(seconds)) if seconds else None}
    return {**results, **metrics.summarize(results["matrix"], results["tasks"]), **costs}


def method_key(flat: dict) -> str:
    """What a group reproduces (from its flat config): `method.name`, with `/policy.name` for the MoE method (runs
    older than the methods: moe)."""
    method = flat.get("method.name", "moe")
    return f"moe/{flat.get('policy.name')}" if method == "moe" else method


def _unique_labels(groups: list[Group]) -> None:
    """Groups sharing a label (e.g. runs that differ only in lr) get the config values that tell them apart."""
    by_label: dict[str, list[Group]] = {}
    for g in groups:
        by_label.setdefault(g.label, []).append(g)
    for label, same in by_label.items():
        if len(same) == 1:
            continue
        flat = [flatten(g.config) for g in same]
        keys = sorted({k for f in flat for k in f if any(f.get(k) != o.get(k) for o in flat)})
        # a dataset only some groups use differs by data.order already
        keys = [k for k in keys if not (k.startswith("dataset.") and any(k not in f for f in flat))] or keys
        for g, f in zip(same, flat):
            own = [k for k in keys if k in f] or keys      # what this group sets (another may not have the key)
            shown = [k for k in own if k not in ("data.order", "policy.name")] or own
            g.label = f"{label} ({', '.join(f'{k}={f.get(k)}' for k in shown)})" if shown else label
    labels = [g.label for g in groups]
    for i, g in enumerate(groups):
        if labels.count(g.label) > 1:
            g.label = f"{g.label} #{labels[:i + 1].count(g.label)}"


def _label(cfg: dict) -> str:
    """What a group is called: a baseline's method, else its policy (or zero-shot: no adapters at all); differing
    keys are added later."""
    method = (cfg.get("method") or {}).get("name", "moe")
    if method != "moe":
        return method
    if (cfg.get("eval") or {}).get("mode") == "zero-shot":
        return "zero-shot"
    return str((cfg.get("policy") or {}).get("name", "?"))


def _grouping(d: Path, stored: dict) -> tuple[str, dict, str, str | None]:
    """(group key, flat config shown, label, note) of one finished run."""
    rec = provenance.of_results(stored, RunDir(d).results)
    if rec is not None:
        return "record:" + provenance.group_key(rec), provenance.group_config(rec), _label(rec["config"]), None
    cfg = rundir.read_config(d)
    if cfg:
        flat = provenance.identity(cfg, provenance.GROUPING_IGNORES)
        flat.update({k: v for k, v in flatten(cfg).items() if k in provenance.LOCATIONS})
        return ("config:" + provenance.sha256(flat), flat, _label(cfg),
                f"{d} has no provenance record (written by an earlier mtil): grouped by its config.yaml, with "
                f"data.root and model.pretrained compared as paths, not content")
    return (f"alone:{d.resolve()}", {}, d.name,
            f"{d} records no config (no provenance record, no config.yaml): reported alone, as '{d.name}'")


def _seed(stored: dict, d: Path):
    rec = stored.get("provenance")
    if isinstance(rec, dict) and isinstance(rec.get("config"), dict):
        return rec["config"].get("seed")
    return rundir.read_config(d).get("seed", stored.get("seed"))


def group_runs(paths: list[str | Path]) -> list[Group]:
    found, _ = run_dirs(paths)
    groups: dict[str, Group] = {}
    seeds: dict[str, dict] = {}   # group key -> seed -> the run directory counted for it
    for d, stored in found.items():
        results = recomputed(stored)
        key, flat, label, note = _grouping(d, stored)
        key += json.dumps(results["tasks"]) + _protocol_key(stored)
        if key not in groups:
            groups[key], seeds[key] = Group(label, results["tasks"], flat, protocol=protocol.of_results(stored)), {}
        seed = _seed(stored, d)
        if seed is not None and seed in seeds[key]:
            note = f"{d} repeats seed {seed} of {seeds[key][seed]} with the same config, backbone and data: left out"
        else:
            seeds[key][seed if seed is not None else d] = d
            groups[key].runs.append(results)
            groups[key].dirs.append(d)
        if note:
            log.warning("report: %s", note)
            groups[key].notes.append(note)
    out = list(groups.values())
    _unique_labels(out)
    return out


def _protocol_key(stored: dict) -> str:
    """What two runs must share to be averaged besides their config: their protocol (mtil.protocol.key), e.g. the
    backbone's activation, which the config does not decide (it depends on the open_clip version)."""
    return json.dumps(protocol.key(protocol.of_results(stored)), sort_keys=True, default=str)


def _protocol_cells(prot: dict, missing: str = "?") -> dict:
    """A row's protocol columns as text (`missing` where a run does not record it, '-' where a paper states none)."""
    return {k: missing if prot.get(k) is None else str(prot[k]) for k in PROTOCOL}


def _published_beside(names, groups: list[Group]) -> dict[str, list[int]]:
    """{published row name: indices of the groups of its protocol} (references.yaml `protocols`; a row without a
    stated protocol matches every group). A row whose protocol no group shares is left out of the table."""
    stated = _references().get("protocols", {})
    return {name: [i for i, g in enumerate(groups) if protocol.matches(stated.get(name, {}), g.protocol)]
            for name in names}


def _references() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parent / "references.yaml").read_text())


def references(tasks: list[str]) -> tuple[str, dict]:
    """The published rows of the MTIL order these tasks are ({} for any other stream: not comparable)."""
    for name, entry in _references().items():
        if isinstance(entry, dict) and entry.get("tasks") == tasks:
            return name, entry["rows"]
    return "", {}


def fmt_count(values: np.ndarray) -> str:
    """A parameter count as 7.56M / 143.4k / 512 (mean over seeds)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return "-"
    v = float(np.mean(values))
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def fmt_seconds(values: np.ndarray) -> str:
    """Wall time as mean ± std over seeds, in s (< 2 min), min (< 2 h) or h."""
    values = values[~np.isnan(values)]
    if not len(values):
        return "-"
    scale, unit = (1, "s") if np.mean(values) < 120 else (60, "min") if np.mean(values) < 7200 else (3600, "h")
    return f"{metrics.fmt_mean_std(values / scale)} {unit}"


def fmt(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    return metrics.fmt_mean_std(values) if len(values) else "-"


def streams(groups: list[Group]) -> list[list[Group]]:
    """Groups split by task stream, in first-seen order."""
    out: dict[tuple, list[Group]] = {}
    for g in groups:
        out.setdefault(tuple(g.tasks), []).append(g)
    return list(out.values())


def table(groups: list[Group]) -> list[dict]:
    """Rows of the main table of one stream: published references of the groups' protocols (each right above the
    group reproducing it with its protocol, the others first), then each group (with its number of seeds); every
    row with its protocol columns."""
    order, refs = references(groups[0].tasks)
    reproduces = _references().get("methods", {})
    stated = _references().get("protocols", {})
    beside = _published_beside(refs, groups)
    published = {name: {"method": f"{name} (published, ViT-B/16, {order})", "seeds": None, "tasks": groups[0].tasks,
                        **{m: "" for m in (*METRICS, *COSTS)}, **{m: v for m, v in zip(METRICS, vals)},
                        **_protocol_cells({**stated.get(name, {}), "order": protocol.ORDERS.get(order, order),
                                           "settings": "published"}, missing="-")}
                 for name, vals in refs.items() if beside[name]}
    reproduced = {name for name in published
                  if any(reproduces.get(name) == method_key(groups[i].config) for i in beside[name])}
    rows = [published.pop(name) for name in list(published) if name not in reproduced]
    for i, g in enumerate(groups):
        rows += [published.pop(name) for name in list(published)
                 if reproduces.get(name) == method_key(g.config) and i in beside[name]]
        row = {"method": g.label, "seeds": len(g.runs), "tasks": g.tasks, **_protocol_cells(g.protocol)}
        for m in (*METRICS, *COSTS):
            v = g.values(m)
            row[m] = {"trainable": fmt_count, "train_seconds": fmt_seconds}.get(m, fmt)(v)
            finite = v[~np.isnan(v)]   # transfer of a one-task run is undefined (NaN): null in JSON, empty in CSV
            mean, std = metrics.mean_std(finite) if len(finite) else (None, None)
            row[f"{m}_mean"], row[f"{m}_std"] = (float(mean), float(std)) if len(finite) else (None, None)
        rows.append(row)
    return rows


def per_dataset(groups: list[Group]) -> list[dict]:
    """Per-dataset Transfer / Avg / Last rows of one stream, each with the Average over its datasets."""
    rows = []
    for g in groups:
        for key in PER_DATASET:
            cols = {d: g.values(key, d) for d in g.tasks} | {"Average": g.values(key)}
            means = {d: float(np.mean(v)) if not np.isnan(v).all() else None for d, v in cols.items()}
            rows.append({"method": g.label, "metric": key, **{d: fmt(v) for d, v in cols.items()}, "means": means})
    return rows


def _csv(parts: list[tuple[list[dict], list[dict]]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "seeds", *(c for m in (*METRICS, *COSTS) for c in (m, f"{m}_std")), *PROTOCOL])
    for main, _ in parts:
        for r in main:
            if r["seeds"] is None:
                cells = [c for m in (*METRICS, *COSTS) for c in (r[m], "")]
            else:
                cells = [c for m in (*METRICS, *COSTS) for c in (r[f"{m}_mean"], r[f"{m}_std"])]
                cells = ["" if c is None else round(c, 4) for c in cells]
            writer.writerow([r["method"], r["seeds"] or "", *cells, *(r[k] for k in PROTOCOL)])
    for main, datasets in parts:
        tasks = main[-1]["tasks"]
        writer.writerow([])
        writer.writerow(["method", "metric", *tasks, "Average"])
        for r in datasets:
            cells = [r["means"][d] for d in [*tasks, "Average"]]
            writer.writerow([r["method"], r["metric"], *("" if c is None else round(c, 4) for c in cells)])
    return buf.getvalue()


def _finite(obj):
    """obj with every non-finite float as None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def render(paths: list[str | Path], fmt_name: str = "md") -> str:
    if fmt_name not in ("md", "csv", "json"):
        raise MtilError(f"unknown report format '{fmt_name}'; use md, csv or json")
    groups = group_runs(paths)
    parts = [(table(s), per_dataset(s)) for s in streams(groups)]
    notes = [n for g in groups for n in g.notes]
    if fmt_name == "json":
        return json.dumps(_finite({"table": [r for main, _ in parts for r in main],
                                   "per_dataset": [r for _, ds in parts for r in ds],
                                   "runs": {g.label: [str(d) for d in g.dirs] for g in groups},
                                   "notes": notes}), indent=2, allow_nan=False)
    if fmt_name == "csv":
        return _csv(parts)
    lines = []
    for main, datasets in parts:
        tasks = main[-1]["tasks"]
        if len(parts) > 1:
            lines += [f"stream: {', '.join(tasks)}", ""]
        lines += ["| method | seeds | " + " | ".join(HEADERS[m] for m in (*METRICS, *COSTS)) + " | "
                  + " | ".join(PROTOCOL_HEADERS[k] for k in PROTOCOL) + " |",
                  "|---|---|" + "---|" * len(METRICS) + "---:|" * len(COSTS) + "---|" * len(PROTOCOL)]
        for r in main:
            lines.append(f"| {r['method']} | {r['seeds'] or ''} | "
                         + " | ".join(str(r[m]) for m in (*METRICS, *COSTS)) + " | "
                         + " | ".join(r[k] for k in PROTOCOL) + " |")
        lines += ["", "| method | metric | " + " | ".join(tasks) + " | Average |", "|---|---|" + "---|" * (len(tasks) + 1)]
        for r in datasets:
            lines.append(f"| {r['method']} | {HEADERS[r['metric']]} | "
                         + " | ".join(r[d] for d in [*tasks, "Average"]) + " |")
        lines.append("")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines).rstrip("\n")


# ---- paired differences: `mtil report RUNS --paired A B` ------------------------------------------------------
# Two groups of one stream, named by their labels as the table prints them (e.g. `merge`, `freeze`,
# `merge (policy.merge.combine=copy)`), are paired by seed: for every metric, the per-seed differences A - B, their
# mean and a percentile bootstrap interval of that mean (resampling seeds; settings in configs/report.yaml).
PAIRED_METRICS = (*METRICS, *COSTS)


def paired_settings():
    """configs/report.yaml's `paired` section (bootstrap resamples, confidence, seed)."""
    from . import config
    return config.load("report.yaml", schema="report.yaml").paired


def bootstrap_interval(diffs, *, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (resampled with replacement, numpy default_rng(seed))."""
    d = np.asarray(diffs, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def _run_seed(run: dict):
    rec = run.get("provenance")
    if isinstance(rec, dict) and isinstance(rec.get("config"), dict) and "seed" in rec["config"]:
        return rec["config"]["seed"]
    return run.get("seed")


def paired_differences(a: Group, b: Group, settings=None, metrics: tuple = PAIRED_METRICS) -> dict:
    """Per-seed differences a - b of every metric (seeds both groups have), their mean and bootstrap interval."""
    if a.tasks != b.tasks:
        raise MtilError(f"--paired: {a.label} and {b.label} learn different task streams; pair groups of one stream")
    s = settings or paired_settings()
    by_a = {_run_seed(r): r for r in a.runs}
    by_b = {_run_seed(r): r for r in b.runs}
    seeds = [k for k in by_a if k in by_b and k is not None]
    if not seeds:
        raise MtilError(f"--paired: {a.label} (seeds {sorted(map(str, by_a))}) and {b.label} (seeds "
                        f"{sorted(map(str, by_b))}) share no seed; run both with the same seeds")
    seeds.sort()
    rows = []
    for m in metrics:
        va = np.array([np.nan if by_a[k].get(m) is None else by_a[k][m] for k in seeds], dtype=float)
        vb = np.array([np.nan if by_b[k].get(m) is None else by_b[k][m] for k in seeds], dtype=float)
        d = va - vb
        ok = ~np.isnan(d)
        lo, hi = (bootstrap_interval(d[ok], resamples=s.resamples, confidence=s.confidence, seed=s.seed)
                  if ok.any() else (None, None))
        rows.append({"metric": m, "a_mean": float(np.mean(va[ok])) if ok.any() else None,
                     "b_mean": float(np.mean(vb[ok])) if ok.any() else None,
                     "diff_mean": float(np.mean(d[ok])) if ok.any() else None, "ci_low": lo, "ci_high": hi,
                     "diffs": [None if np.isnan(x) else float(x) for x in d]})
    unpaired = {g.label: sorted(str(k) for k in keys if k not in seeds)
                for g, keys in ((a, by_a), (b, by_b)) if any(k not in seeds for k in keys)}
    return {"a": a.label, "b": b.label, "tasks": a.tasks, "seeds": seeds, "unpaired": unpaired,
            "resamples": s.resamples, "confidence": s.confidence, "bootstrap_seed": s.seed, "rows": rows}


def find_group(groups: list[Group], label: str) -> Group:
    for g in groups:
        if g.label == label:
            return g
    raise MtilError(f"--paired: no group named {label!r}; the groups are: "
                    + "; ".join(repr(g.label) for g in groups))


def fmt_signed(x) -> str:
    return "-" if x is None else f"{x:+.2f}"


def paired_markdown(p: dict) -> str:
    """The paired table of `paired_differences`: one row per metric."""
    seeds = ", ".join(map(str, p["seeds"]))
    pct = f"{p['confidence'] * 100:g}%"
    lines = [f"paired by seed: {p['a']} - {p['b']} (seeds {seeds}; {pct} percentile bootstrap interval of the mean, "
             f"{p['resamples']} resamples, seed {p['bootstrap_seed']})", "",
             f"| metric | {p['a']} | {p['b']} | difference | {pct} interval | per seed |", "|---|---|---|---|---|---|"]
    for r in p["rows"]:
        if r["diff_mean"] is None:
            continue
        scale = 1.0 if r["metric"] != "trainable" else 1e-3
        unit = "" if r["metric"] != "trainable" else " (k)"
        lines.append(f"| {HEADERS[r['metric']]}{unit} | {r['a_mean'] * scale:.2f} | {r['b_mean'] * scale:.2f} | "
                     f"{fmt_signed(r['diff_mean'] * scale)} | [{fmt_signed(r['ci_low'] * scale)}, "
                     f"{fmt_signed(r['ci_high'] * scale)}] | "
                     + " ".join(fmt_signed(None if x is None else x * scale) for x in r["diffs"]) + " |")
    lines += [f"note: seeds of {label} without a partner, left out: {', '.join(s)}"
              for label, s in p["unpaired"].items()]
    return "\n".join(lines)


def render_paired(paths: list[str | Path], a: str, b: str, fmt_name: str = "md") -> tuple[str, dict]:
    """(text, paired result) of `mtil report RUNS --paired A B`; md or json (csv: one row per metric)."""
    groups = group_runs(paths)
    p = paired_differences(find_group(groups, a), find_group(groups, b))
    if fmt_name == "json":
        return json.dumps(_finite(p), indent=2, allow_nan=False), p
    if fmt_name == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["metric", "a", "b", "a_mean", "b_mean", "diff_mean", "ci_low", "ci_high",
                         *(f"seed{k}" for k in p["seeds"])])
        for r in p["rows"]:
            writer.writerow([r["metric"], p["a"], p["b"], *("" if r[k] is None else round(r[k], 4) for k in
                             ("a_mean", "b_mean", "diff_mean", "ci_low", "ci_high")),
                             *("" if x is None else round(x, 4) for x in r["diffs"])])
        return buf.getvalue(), p
    return paired_markdown(p), p
