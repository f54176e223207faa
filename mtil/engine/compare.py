"""The methods (x policies) x seeds grid: one run directory per cell, then one table and one figure.

Cells are `OUT/<policy>-seed<k>` for the MoE method with each policy and `OUT/<method>-seed<k>` for every other
method (zero-shot, finetune, lwf, icarl, wiseft, zscl), each keyed by its resolved config: a finished cell whose config.yaml equals the
cell's config now (up to the keys `report.IGNORED_KEYS` lets differ within a group, seed excepted) is reused and
named as such, an interrupted one resumed, so re-running the same command continues the grid. A cell written with
another config (e.g. a changed `--set train.lr=...`) is never reused: compare stops and names the differing keys.
The table is `mtil report` over the grid (mean ± std per method and policy, trainable parameters and training
time, published rows beside their reproductions on an MTIL order); the figure is `plots.compare_policies`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .. import config, report, rundir
from ..errors import MtilError
from ..rundir import files
from ..rundir.layout import RunDir
from .run import run

log = logging.getLogger(__name__)


def cell_status(cell: Path) -> str:
    """done / partial (a checkpoint to resume from; a damaged results.json is rewritten by the resume) / new."""
    paths = RunDir(cell)
    has_checkpoint = paths.checkpoint.exists()
    if paths.finished():
        try:
            if rundir.read_results(cell).get("complete"):
                return "done"
        except MtilError:
            if not has_checkpoint:
                raise
    return "partial" if has_checkpoint else "new"


def _comparable(cfg: dict) -> dict:
    return config.flatten({**report.stripped_config(cfg), "seed": cfg.get("seed")})


def _differences(saved: dict, now: dict) -> list[str]:
    old, new = _comparable(saved), _comparable(now)
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def variants(methods: list[str], policies: list[str]) -> list[tuple[str, list[str]]]:
    """(cell name, overrides) of each row of the grid: the MoE method once per policy, every other method once."""
    out = []
    for method in methods:
        if method == "moe":
            out += [(policy, ["method.name=moe", f"policy.name={policy}"]) for policy in policies]
        else:
            out.append((method, [f"method.name={method}"]))
    return out


def run_grid(config_path, overrides: list[str], policies: list[str], seeds: list[int],
             out: Path, methods: list[str] = ("moe",)) -> tuple[list[Path], list[Path]]:
    """Run every cell not yet finished; returns (cells, cells reused as already finished with this config)."""
    plan = []
    for name, chosen in variants(list(methods), policies):
        for seed in seeds:
            cell = out / f"{name}-seed{seed}"
            cfg = config.load(config_path, [*overrides, *chosen, f"seed={seed}", "output.plots=false"])
            status = cell_status(cell)
            if status != "new" and RunDir(cell).config.exists():
                diff = _differences(rundir.read_config(cell), config.unwrap(cfg))
                if diff:
                    raise MtilError(f"cell {cell} was run with another config ({'; '.join(diff[:3])}"
                                    f"{'; ...' if len(diff) > 3 else ''}); give a new --out for this grid")
            plan.append((cell, cfg, status))
    reused = []
    for cell, cfg, status in plan:
        if status == "done":
            log.info("%s: finished with the same resolved config, reused", cell.name)
            reused.append(cell)
            continue
        log.info("%s: %s", cell.name, "resuming" if status == "partial" else "starting")
        run(cfg, cell, resume=status == "partial")
    return [cell for cell, _, _ in plan], reused


def summarize_grid(cells: list[Path], out: Path) -> dict:
    from ..plots import compare_policies
    groups = report.group_runs(cells)
    by_policy = {g.label: g.runs for g in groups}  # labels are unique per config (report.group_runs)
    paths = {"table_md": out / "compare.md", "table_json": out / "compare.json", "figure": out / "compare.png"}
    files.write_text(paths["table_md"], report.render(cells, "md") + "\n")
    files.write_text(paths["table_json"], report.render(cells, "json") + "\n")
    fig = compare_policies(by_policy)
    for suffix in ("png", "svg"):
        target = out / f"compare.{suffix}"
        files.atomic_write(target, lambda f, s=suffix: fig.savefig(f, format=s, dpi=120, bbox_inches="tight"), "wb")
    return {k: str(v) for k, v in paths.items()}
