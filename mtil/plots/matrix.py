"""`accuracy_matrix`: A[i][j] with values, the diagonal outlined; Transfer / Avg / Last / BWT in the title when the
run is complete."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .common import (
    MissingData,
    annotate,
    as_run,
    fmt_value,
    heatmap,
    mark_panel,
    new_figure,
)


def accuracy_matrix(run) -> Figure:
    """A[i][j] (top-1 %, row i = after training task i) with values; the diagonal outlined."""
    run = as_run(run)
    tasks = run.tasks
    if not run.matrix:
        raise MissingData(f"{run.path} has no evaluated row yet")
    data = np.asarray(run.matrix, dtype=float)
    fig = new_figure(2.4 + 0.75 * len(tasks), 2.0 + 0.5 * data.shape[0])
    ax = mark_panel(fig.add_subplot(1, 1, 1), "matrix")
    image, cmap, norm = heatmap(ax, data, "viridis", 0, 100)
    annotate(ax, data, lambda v: f"{v:.1f}", cmap, norm, fontsize=8 if len(tasks) <= 8 else 6.5)
    for i in range(min(data.shape)):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.8))
    ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(data.shape[0]), [f"after {t}" for t in tasks[:data.shape[0]]])
    ax.set_xlabel("evaluated on (right of the diagonal: not learned yet)")
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)", shrink=0.9)
    r = run.results
    title = f"Accuracy matrix — {run.name}: {run.what}, eval {r.get('eval_mode', '?')}"
    if run.complete:
        title += (f"\nTransfer {fmt_value(r.get('transfer'))}   Avg {fmt_value(r.get('avg'))}   "
                  f"Last {fmt_value(r.get('last'))}   BWT {fmt_value(r.get('bwt'))}")
    else:
        title += f"\n(partial run: {data.shape[0]} of {len(tasks)} tasks evaluated)"
    ax.set_title(title, fontsize=10)
    return fig
