"""`mtil study merge`: does merging experts help, against freeze and against controls of the mechanism?

The study (configs/merge_study/demo.yaml; schema merge_study/base.yaml) runs every arm (a list of `--set`
overrides: freeze, merge, its controls) in every setting (a run config: per task, task-free) for its seeds, one run
directory per cell, `OUT/<setting>/<arm>-seed<k>`. Cells run seed by seed, so a study cut short holds whole seeds.
A finished cell is reused and an interrupted one resumed when its provenance record is the cell's (as `mtil
compare` does), so re-running the command continues the study. Wall and CPU seconds of every cell run are kept in
OUT/timings/ (one file per cell, so commands over disjoint cells, e.g. `--settings per_task` and `--settings
task_free`, may run at once into one OUT).

The summary (OUT/<name>.json and .md, OUT/<name>_<setting>.png): per setting, every arm's metrics (mean ± std),
the paired differences of every arm against the baseline and of the contrasts (`report.paired_differences`:
per-seed differences and a bootstrap interval, configs/report.yaml), and the merge diagnostics that
`policies.merge` writes into each run's events.jsonl, pooled over runs.
"""
from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config, report, rundir
from ..errors import MtilError
from ..metrics import fmt_mean_std
from ..rundir import files
from ..rundir.layout import RunDir

log = logging.getLogger(__name__)
SCHEMA = "merge_study/base.yaml"
DEFAULT_CONFIG = "merge_study/demo.yaml"
METRICS = ("transfer", "avg", "last", "forgetting")


def load_config(path=None, overrides=()) -> config.Config:
    cfg = config.load(path or DEFAULT_CONFIG, overrides, schema=SCHEMA)
    s = cfg.study
    if not s.settings or not s.arms:
        raise MtilError("the merge study needs study.settings and study.arms (see configs/merge_study/demo.yaml)")
    named = [s.baseline, *(a for pair in s.contrasts for a in pair), *s.arm_seeds]
    unknown = sorted({a for a in named if a not in s.arms})
    if unknown:
        raise MtilError(f"study names arms it does not define: {', '.join(unknown)}; arms: {', '.join(s.arms)}")
    if any(len(pair) != 2 for pair in s.contrasts):
        raise MtilError(f"study.contrasts must be pairs [A, B], got {s.contrasts}")
    stray = {a: sorted(set(seeds) - set(s.seeds)) for a, seeds in s.arm_seeds.items() if set(seeds) - set(s.seeds)}
    if stray:
        raise MtilError(f"study.arm_seeds must be subsets of study.seeds {s.seeds}; not: {stray}")
    return cfg


@dataclass
class Cell:
    setting: str
    arm: str
    seed: int
    path: Path
    cfg: config.Config
    status: str


def plan(cfg, out: Path, run_overrides=(), seeds=None, arms=None, settings=None) -> list[Cell]:
    """Every cell of the study (restricted to the given seeds / arms / settings), seed by seed, each checked
    against what its directory already holds (`engine.compare.planned_status`)."""
    from ..engine.compare import planned_status
    s = cfg.study
    for kind, chosen, known in (("arm", arms, s.arms), ("setting", settings, s.settings)):
        bad = [c for c in chosen or () if c not in known]
        if bad:
            raise MtilError(f"unknown {kind} {', '.join(bad)}; the study's: {', '.join(known)}")
    seeds = list(s.seeds) if seeds is None else list(seeds)
    cells = []
    for seed in seeds:
        for setting in settings or s.settings:
            for arm in arms or s.arms:
                if arm in s.arm_seeds and seed not in s.arm_seeds[arm]:
                    continue
                path = out / setting / f"{arm}-seed{seed}"
                run_cfg = config.load(s.settings[setting], [*run_overrides, *s.arms[arm], f"seed={seed}",
                                                            "output.plots=false"])
                cells.append(Cell(setting, arm, seed, path, run_cfg, planned_status(path, run_cfg)))
    return cells


def _timing_path(out: Path, c: Cell) -> Path:
    return out / "timings" / c.setting / f"{c.arm}-seed{c.seed}.json"


def run_cells(cells: list[Cell], out: Path) -> list[Cell]:
    """Run the unfinished cells in order; wall and CPU seconds of each go into OUT/timings/<setting>/<cell>.json
    (one file per cell). Several study commands may share one OUT: a cell's status is read again just before it
    runs, and a cell another process is writing is left to it (returned)."""
    from ..engine.compare import cell_status, run_plan
    from ..rundir.claim import Busy
    busy = []
    for i, c in enumerate(cells):
        c.status = cell_status(c.path)
        if c.status == "done":
            continue
        log.info("merge study: cell %d of %d: %s/%s-seed%d", i + 1, len(cells), c.setting, c.arm, c.seed)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            run_plan([(c.path, c.cfg, c.status)])
        except Busy as e:
            log.warning("merge study: %s; left to it", e)
            busy.append(c)
            continue
        files.write_json(_timing_path(out, c), {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu})
    return busy


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the summary ---------------------------------------------------------------------------------------------
def _group(label: str, cells: list[Cell]) -> report.Group:
    runs = [report.recomputed(rundir.read_results(c.path)) for c in cells]
    return report.Group(label, runs[0]["tasks"], runs=runs, dirs=[c.path for c in cells])


def _events(cell: Cell) -> list[dict]:
    path = RunDir(cell.path).events
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return None if not len(v) else {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                    "n": int(len(v))}


def diagnostics(cells: list[Cell]) -> dict:
    """The merge events of one arm's runs, pooled: merges and skips per run, cosine of the sources, the merged slot's
    share of its layer's selections before and after the merge (beside the uniform share 1 / experts), how often it
    is selected at all and frozen at the task's end, and the loss change across merge steps (after - before) beside
    the drift between the two windows before it (before - earlier)."""
    merges, skipped, steps = [], 0, {}
    for c in cells:
        for e in _events(c):
            if e["action"] == "merge":
                merges.append(e)
                steps[(str(c.path), e["step"])] = e   # the losses are the whole model's: one per merge step
            skipped += e["action"] == "merge-skipped" and e.get("tower") is not None
    if not merges:
        return {"merges_per_run": 0.0}
    frozen = [e["frozen_at_end"] for e in merges if "frozen_at_end" in e]
    after = [e.get("share_after") for e in merges]
    across = [e["loss_after"] - e["loss_before"] for e in steps.values()
              if e.get("loss_after") is not None and e.get("loss_before") is not None]
    drift = [e["loss_before"] - e["loss_earlier"] for e in steps.values()
             if e.get("loss_before") is not None and e.get("loss_earlier") is not None]
    return {"merges_per_run": len(merges) / len(cells), "skipped_per_run": skipped / len(cells),
            "merge_steps_per_run": len(steps) / len(cells),
            "uniform_share": 1 / cells[0].cfg.moe.num_experts,
            "cosine": _stats(e.get("cosine") for e in merges),
            "share_before": _stats(e.get("share_before") for e in merges), "share_after": _stats(after),
            "selected_after": float(np.mean([a is not None and a > 0 for a in after])),
            "above_uniform_after": float(np.mean([a is not None and a > 1 / cells[0].cfg.moe.num_experts
                                                  for a in after])),
            "frozen_at_end": float(np.mean(frozen)) if frozen else None, "frozen_at_end_n": len(frozen),
            "loss_change_across": _stats(across), "loss_drift_before": _stats(drift)}


def summarize(cfg, cells: list[Cell], out: Path) -> dict:
    """Per setting: every arm's metrics, the paired differences against the baseline and the contrasts, and the
    merge diagnostics; plus the cells' wall and CPU time (OUT/timings/)."""
    s = cfg.study
    settings = {}
    for setting in dict.fromkeys(c.setting for c in cells):
        by_arm = {}
        for c in cells:
            if c.setting == setting:
                by_arm.setdefault(c.arm, []).append(c)
        groups = {arm: _group(arm, cs) for arm, cs in by_arm.items()}
        pairs = [(arm, s.baseline) for arm in groups if arm != s.baseline] + [tuple(p) for p in s.contrasts]
        settings[setting] = {
            "config": s.settings[setting],
            "arms": {arm: {"overrides": list(s.arms[arm]), "seeds": [c.seed for c in by_arm[arm]],
                           **{m: _stats(g.values(m)) for m in METRICS},
                           "diagnostics": diagnostics(by_arm[arm])} for arm, g in groups.items()},
            "paired": [report.paired_differences(groups[a], groups[b], metrics=METRICS)
                       for a, b in pairs if a in groups and b in groups]}
    timed = [json.loads(_timing_path(out, c).read_text()) for c in cells if _timing_path(out, c).exists()]
    return {"settings": settings, "cells": len(cells), "timed_cells": len(timed),
            "wall_s": float(sum(t["wall_s"] for t in timed)), "cpu_s": float(sum(t["cpu_s"] for t in timed))}


def _cell(stats: dict | None, digits: int = 1, scale: float = 1.0) -> str:
    if stats is None:
        return "-"
    m, sd = stats["mean"] * scale, stats["std"] * scale
    return f"{m:.{digits}f}" if stats["n"] == 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = []
    for setting, data in summary["settings"].items():
        lines += [f"### {setting} ({data['config']})", "",
                  "| arm | seeds | Transfer | Avg | Last | Forgetting |", "|---|---|---|---|---|---|"]
        for arm, a in data["arms"].items():
            lines.append(f"| {arm} | {len(a['seeds'])} | " + " | ".join(_cell(a[m]) for m in METRICS) + " |")
        if data["paired"]:
            p0 = data["paired"][0]
            lines += ["", f"Paired by seed, A - B: mean difference [{p0['confidence'] * 100:g}% bootstrap interval] "
                          f"({p0['resamples']} resamples of the seeds, seed {p0['bootstrap_seed']}), points:", "",
                      "| A - B | seeds | Transfer | Avg | Last | Forgetting |", "|---|---|---|---|---|---|"]
            for p in data["paired"]:
                rows = {r["metric"]: r for r in p["rows"]}
                lines.append(f"| {p['a']} - {p['b']} | {len(p['seeds'])} | " + " | ".join(
                    f"{rows[m]['diff_mean']:+.2f} [{rows[m]['ci_low']:+.2f}, {rows[m]['ci_high']:+.2f}]"
                    for m in METRICS) + " |")
        lines += ["", "Merge diagnostics, pooled over the arm's runs and layers (mean ± std over merges; shares are "
                      "of the layer's top-k selections; loss: mean training loss over policy.merge.loss_steps steps):",
                  "", "| arm | merges / run | skipped / run | cosine(a, b) | c's share before | c's share after | "
                      "selected after | above uniform | frozen at task end | loss after - before | loss drift "
                      "before (no merge) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, a in data["arms"].items():
            d = a["diagnostics"]
            if not d.get("merges_per_run"):
                continue
            pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"   # noqa: E731
            lines.append(f"| {arm} | {d['merges_per_run']:.1f} | {d['skipped_per_run']:.1f} | {_cell(d['cosine'], 2)}"
                         f" | {_cell(d['share_before'], 1, 100)}% | {_cell(d['share_after'], 1, 100)}% (uniform "
                         f"{100 * d['uniform_share']:.1f}%) | {pct(d['selected_after'])} | "
                         f"{pct(d['above_uniform_after'])} | {pct(d['frozen_at_end'])} | "
                         f"{_cell(d['loss_change_across'], 3)} | {_cell(d['loss_drift_before'], 3)} |")
        lines.append("")
    if summary.get("not_run"):
        lines.append(f"Not run (left out): {', '.join(summary['not_run'])}")
    wall, cpu = summary["wall_s"], summary["cpu_s"]
    lines.append(f"{summary['cells']} runs; {summary['timed_cells']} timed by this study: wall {wall / 60:.1f} min, "
                 f"CPU {cpu / 60:.1f} min (OUT/timings/)")
    return "\n".join(lines)


def write(summary: dict, out: Path, name: str = "study") -> list[Path]:
    from ..plots import paired_differences
    from ..plots.common import save_figure
    paths = [files.write_json(out / f"{name}.json", report._finite(summary)),
             files.write_text(out / f"{name}.md", markdown(summary) + "\n")]
    for setting, data in summary["settings"].items():
        if data["paired"]:
            fig = paired_differences(data["paired"], title=f"merge study, {setting}: paired differences by seed")
            paths.append(save_figure(fig, out / f"{name}_{setting}.png"))
    return paths


def run_study(cfg, out: Path, run_overrides=(), seeds=None, arms=None, settings=None, name: str = "study",
              summary_only: bool = False) -> tuple[dict, list[Path]]:
    """Plan, run what is unfinished (`summary_only`: nothing; unfinished cells are left out of the summary and
    named in it), summarise; returns (summary, files written)."""
    cells = plan(cfg, out, run_overrides, seeds, arms, settings)
    missing = [f"{c.setting}/{c.arm}-seed{c.seed}" for c in cells if c.status != "done"]
    if summary_only:
        cells = [c for c in cells if c.status == "done"]
        if not cells:
            raise MtilError(f"no finished cell of this study in {out}; run it without --summary-only first")
    else:
        busy = run_cells(cells, out)
        missing = [f"{c.setting}/{c.arm}-seed{c.seed}" for c in busy]
        cells = [c for c in cells if c not in busy]
    summary = {**summarize(cfg, cells, out), "not_run": missing}
    return summary, write(summary, out, name)
