"""The policies x seeds grid: one run directory per cell, then one table and one figure.

Cells are `OUT/<policy>-seed<k>`; a finished cell is skipped, an interrupted one resumed, so re-running the same
command continues the grid. The table is `mtil report` over the grid (mean ± std per policy); the figure is
`plots.compare_policies`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from . import checkpoint, config, report
from .run import CHECKPOINT, Run

log = logging.getLogger(__name__)


def cell_status(cell: Path) -> str:
    results = cell / "results.json"
    if results.exists() and json.loads(results.read_text()).get("complete"):
        return "done"
    return "partial" if (cell / CHECKPOINT).exists() else "new"


def run_grid(config_path, overrides: list[str], policies: list[str], seeds: list[int], out: Path) -> list[Path]:
    cells = []
    for policy in policies:
        for seed in seeds:
            cell = out / f"{policy}-seed{seed}"
            cells.append(cell)
            status = cell_status(cell)
            if status == "done":
                log.info("%s: finished, skipped", cell.name)
                continue
            cfg = config.load(config_path, [*overrides, f"policy.name={policy}", f"seed={seed}", "output.plots=false"])
            log.info("%s: %s", cell.name, "resuming" if status == "partial" else "starting")
            Run(cfg, cell, resume=status == "partial").execute()
    return cells


def summarize_grid(cells: list[Path], out: Path) -> dict:
    from .plots import compare_policies
    groups = report.group_runs(cells)
    by_policy = {g.label: g.runs for g in groups}  # labels are unique per config (report.group_runs)
    paths = {"table_md": out / "compare.md", "table_json": out / "compare.json", "figure": out / "compare.png"}
    checkpoint.write_text(paths["table_md"], report.render(cells, "md") + "\n")
    checkpoint.write_text(paths["table_json"], report.render(cells, "json") + "\n")
    fig = compare_policies(by_policy)
    for suffix in ("png", "svg"):
        target = out / f"compare.{suffix}"
        checkpoint.atomic_write(target, lambda f, s=suffix: fig.savefig(f, format=s, dpi=120, bbox_inches="tight"), "wb")
    return {k: str(v) for k, v in paths.items()}
