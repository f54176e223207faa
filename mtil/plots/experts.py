"""Expert figures: `fixed_expert_heatmap` (frozen or active experts per block after each task, one panel per tower)
and `usage_heatmap` (each task's share of top-k selections per block x expert, one panel per task)."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import MtilError
from ..model import TOWERS
from ..rundir.read import RunRecord
from .common import (
    MissingData,
    annotate,
    as_run,
    heatmap,
    mark_panel,
    new_figure,
    task_labels,
)


def fixed_expert_heatmap(run, value: str = "frozen") -> Figure:
    """x = encoder block, y = task, colour (and number) = experts frozen after that task; one panel per tower.

    `value="active"` shows the active experts instead (the grow policy's expert count)."""
    run = as_run(run)
    if value not in ("frozen", "active"):
        raise MtilError(f"value must be 'frozen' or 'active', got {value!r}")
    towers = [t for t in run.towers if run.usage[f"{t}_{value}"].shape[0] > 0]
    if not towers:
        raise MissingData(f"{run.path} has no per-task expert counts yet (usage.npz missing or no task finished)")
    num_experts = max(run.usage[f"{t}_usage"].shape[2] for t in towers)
    rows = max(run.usage[f"{t}_{value}"].shape[0] for t in towers)
    width = sum(1.2 + 0.5 * len(run.usage[f"{t}_blocks"]) for t in towers) + 2.4
    fig = new_figure(max(width, 5.5), 1.8 + 0.42 * rows)
    axes = []
    for n, tower in enumerate(towers):
        data = run.usage[f"{tower}_{value}"].astype(float)
        blocks = run.usage[f"{tower}_blocks"]
        ax = mark_panel(fig.add_subplot(1, len(towers), n + 1), tower)
        image, cmap, norm = heatmap(ax, data, "YlGnBu", 0, num_experts)
        annotate(ax, data, lambda v: f"{int(v)}", cmap, norm, fontsize=8 if data.size < 150 else 6)
        ax.set_xticks(range(len(blocks)), [str(int(b)) for b in blocks])
        ax.set_yticks(range(data.shape[0]), task_labels(run, data.shape[0]) if n == 0 else [""] * data.shape[0])
        ax.set_xlabel("encoder block")
        ax.set_title(f"{tower} encoder")
        axes.append(ax)
    axes[0].set_ylabel("after task")
    what = "Fixed (frozen) experts" if value == "frozen" else "Active experts"
    fig.colorbar(image, ax=axes, label=f"{value} experts (of {num_experts} per block)", shrink=0.9)
    title = f"{what} per encoder block after each task — {run.name} ({run.what})"
    if value == "frozen" and all(run.usage[f"{t}_frozen"].max(initial=0) == 0 for t in towers):
        title += f"\npolicy '{run.policy}' froze no expert in this run"
        if run.policy == "grow":
            title += "; fixed_expert_heatmap(run, value='active') shows how many experts it activated"
    fig.suptitle(title, fontsize=10)
    return fig


def _frozen_cells(run: RunRecord, tower: str) -> dict[int, list[tuple[int, int]]]:
    """task -> (block, expert) cells frozen at that task's end, from the freeze events."""
    out: dict[int, list[tuple[int, int]]] = {}
    for e in run.events:
        if e.get("action") == "freeze" and e.get("tower") == tower and e.get("block") is not None:
            out.setdefault(int(e.get("task", -1)), []).extend((int(e["block"]), int(x)) for x in e.get("experts", []))
    return out


def usage_heatmap(run, tower: str = "image") -> Figure:
    """One panel per task: share of each block's top-k selections that went to each expert during that task."""
    run = as_run(run)
    if tower not in TOWERS:
        raise MtilError(f"tower must be one of {', '.join(TOWERS)}, got {tower!r}")
    if tower not in run.towers:
        have = ", ".join(run.towers) or "none"
        raise MissingData(f"{run.path} has no {tower}-tower adapters (towers with adapters: {have})")
    counts = run.usage[f"{tower}_usage"].astype(float)
    if counts.shape[0] == 0:
        raise MissingData(f"{run.path} has no finished task yet, so no per-task expert usage")
    total = counts.sum(axis=2, keepdims=True)
    share = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    num_tasks, num_blocks, num_experts = share.shape
    blocks = run.usage[f"{tower}_blocks"]
    block_row = {int(b): i for i, b in enumerate(blocks)}
    frozen = _frozen_cells(run, tower)
    ncols = min(num_tasks, 3)
    nrows = math.ceil(num_tasks / ncols)
    panel_w = 1.0 + min(0.32, 4.5 / num_experts) * num_experts
    panel_h = 0.9 + min(0.3, 3.6 / num_blocks) * num_blocks
    fig = new_figure(ncols * panel_w + 1.4, nrows * panel_h + 1.0)
    labels = task_labels(run, num_tasks)
    axes = []
    vmax = max(float(share.max()), 1e-9)
    for t in range(num_tasks):
        ax = mark_panel(fig.add_subplot(nrows, ncols, t + 1), f"task{t}")
        image, cmap, _ = heatmap(ax, share[t], "Purples", 0, vmax)
        if num_blocks * num_experts <= 48:
            annotate(ax, share[t] * 100, lambda v: f"{v:.0f}", cmap, Normalize(0, vmax * 100), fontsize=6.5)
        for block, expert in frozen.get(t, []):
            if block in block_row and expert < num_experts:
                ax.add_patch(Rectangle((expert - 0.5, block_row[block] - 0.5), 1, 1, fill=False,
                                       edgecolor="tab:red", linewidth=1.6))
        ax.set_xticks(range(num_experts), [str(e) for e in range(num_experts)], fontsize=7)
        ax.set_yticks(range(num_blocks), [str(int(b)) for b in blocks], fontsize=7)
        ax.set_title(f"during {labels[t]}", fontsize=9)
        if t % ncols == 0:
            ax.set_ylabel("block")
        if t >= num_tasks - ncols:
            ax.set_xlabel("expert")
        axes.append(ax)
    fig.colorbar(image, ax=axes, label="share of the block's top-k selections", shrink=0.9 if nrows == 1 else 0.5)
    title = f"Expert usage per task, {tower} tower — {run.name} ({run.what})"
    if frozen:
        title += "\nred outline: expert frozen at the end of that task"
    fig.suptitle(title, fontsize=10)
    return fig
