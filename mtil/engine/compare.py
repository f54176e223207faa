"""The methods (x policies) x seeds grid: one run directory per cell, then one table and one figure.

Cells are `OUT/<policy>-seed<k>` for the MoE method with each policy and `OUT/<method>-seed<k>` for every other
method (zero-shot, finetune, lwf, icarl, wiseft, zscl). A finished cell is reused only when the provenance record its
results.json holds (`mtil.provenance`: config identity with its seed, backbone content, dataset content) is the one
the cell would have now, and named as reused; an interrupted cell is resumed when its checkpoint's record is; so
re-running the same command continues the grid. Any other cell (a changed `--set train.lr=...`, another
`model.pretrained` file, another data root content, a record missing) stops the command, before anything runs, with
what differs. The table is `mtil report` over the grid (mean ± std per method and policy, trainable parameters and
training time, published rows beside their reproductions on an MTIL order); the figure is `plots.compare_policies`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .. import config, provenance, report, rundir
from ..errors import MtilError
from ..rundir import files
from ..rundir.layout import RunDir
from . import checkpoint
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


def _recorded(cell: Path, status: str) -> dict:
    """The provenance record of a finished cell (its results.json) or of an interrupted one (its checkpoint)."""
    if status == "partial":
        return checkpoint.load(RunDir(cell).checkpoint, mmap=True)["provenance"]
    rec = provenance.of_results(rundir.read_results(cell), RunDir(cell).results)
    if rec is None:
        raise MtilError(f"cell {cell} records no provenance (written by an earlier mtil), so it cannot be vouched "
                        "for; give a new --out for this grid")
    return rec


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
            plan.append((cell, cfg, planned_status(cell, cfg)))
    return [cell for cell, _, _ in plan], run_plan(plan)


def planned_status(cell: Path, cfg) -> str:
    """`cell_status` of a cell that is to hold a run of `cfg`; an error when it holds a run of anything else."""
    from ..demo.pretrain import resolve_demo_assets
    resolve_demo_assets(cfg)   # before its record: the demo's data and backbone are facts from the cache
    status = cell_status(cell)
    if status != "new":
        diff = provenance.differences(_recorded(cell, status), provenance.record(cfg))
        if diff:
            raise MtilError(f"cell {cell} was run with another config, backbone or data "
                            f"({provenance.summary(diff)}); give a new --out for this grid")
    return status


def run_plan(plan: list[tuple[Path, dict, str]]) -> list[Path]:
    """Run the (cell, config, status) plan's unfinished cells in order; returns the cells reused as finished."""
    reused = []
    for cell, cfg, status in plan:
        if status == "done":
            log.info("%s: finished with the same config, backbone and data, reused", cell.name)
            reused.append(cell)
            continue
        log.info("%s: %s", cell.name, "resuming" if status == "partial" else "starting")
        run(cfg, cell, resume=status == "partial")
    return reused


def summarize_grid(cells: list[Path], out: Path) -> dict:
    from ..plots import compare_policies
    from ..plots.common import save_figures
    groups = report.group_runs(cells)
    by_policy = {g.label: g.runs for g in groups}  # labels are unique per config (report.group_runs)
    paths = {"table_md": out / "compare.md", "table_json": out / "compare.json", "figure": out / "compare.png"}
    files.write_text(paths["table_md"], report.render(cells, "md") + "\n")
    files.write_text(paths["table_json"], report.render(cells, "json") + "\n")
    save_figures(compare_policies(by_policy), out, "compare", dpi=120)
    return {k: str(v) for k, v in paths.items()}
