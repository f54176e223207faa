"""`router_weights`: the mean gate weight of each expert of one adapter layer over training steps, task boundaries
marked; layers are named `<tower>.<block>` (`DEFAULT_LAYER`, `default_layer`, `parse_layer`)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import MtilError
from ..rundir.read import RunRecord
from .common import (
    MissingData,
    as_run,
    expert_colours,
    mark_panel,
    new_figure,
    span_end,
    task_boundaries,
)

DEFAULT_LAYER = "image.0"


def parse_layer(run: RunRecord, layer: str) -> tuple[str, int]:
    """(tower, row of the layer's block in that tower's arrays); an error naming the run's layers if it has none."""
    layers = run.layers()
    if not layers:
        raise MissingData(f"{run.path} has no adapter layers recorded (usage.npz missing)")
    if layer not in layers:
        shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
        raise MtilError(f"no adapter layer '{layer}' in {run.path}; layers are named <tower>.<block>: {shown}")
    tower, block = layer.split(".")
    return tower, [int(b) for b in run.usage[f"{tower}_blocks"]].index(int(block))


def default_layer(run) -> str | None:
    """`image.0` when the run has it, else its first adapter layer (None without usage data)."""
    layers = as_run(run).layers()
    return DEFAULT_LAYER if DEFAULT_LAYER in layers else (layers[0] if layers else None)


def router_weights(run, layer: str = DEFAULT_LAYER) -> Figure:
    """Stacked mean gate weight of each expert of one layer over training steps, task boundaries marked."""
    run = as_run(run)
    tower, row = parse_layer(run, layer)
    weights = run.usage[f"{tower}_router"][:, row, :].astype(float)      # [S, E]
    steps = np.asarray(run.usage.get("router_steps", np.arange(1, len(weights) + 1)), dtype=float)
    if len(weights) == 0:
        raise MissingData(f"{run.path} has no router snapshots (no step trained yet, or router_snapshot_every "
                          f"larger than train.iterations)")
    num_experts = weights.shape[1]
    used = [e for e in range(num_experts) if weights[:, e].max() > 0] or list(range(num_experts))
    # snapshot i is the mean over the steps since the previous snapshot: draw it as a step over that interval
    x = np.concatenate([[0.0 if steps[0] > 0 else steps[0] - 1], steps])
    y = np.concatenate([weights[:1], weights])
    end = span_end(run, steps)
    fig = new_figure(9.5, 4.2)
    ax = mark_panel(fig.add_subplot(1, 1, 1), layer)
    colours = expert_colours(num_experts)
    ax.stackplot(x, *(y[:, e] for e in used), labels=[f"expert {e}" for e in used],
                 colors=[colours[e] for e in used], step="pre", linewidth=0)
    ax.set_xlim(0, max(end, steps[-1]))
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    task_boundaries(ax, run, max(end, int(steps[-1])))
    ax.set_xlabel("training step (global)")
    ax.set_ylabel("mean gate weight")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False,
              ncols=1 if len(used) <= 14 else 2, title="expert", title_fontsize=8)
    router = (run.config.get("moe") or {}).get("router") if isinstance(run.config.get("moe"), dict) else None
    note = {"per_task": "one router per task", "shared": "one shared router"}.get(router, "")
    fig.suptitle(f"Router weights of layer {layer} — {run.name} ({run.what}"
                 f"{'; ' + note if note else ''})", fontsize=10)
    return fig
