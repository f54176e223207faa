"""`event_timeline`: merge / grow / freeze events over global steps, one row per adapter layer, one marker style
per action (`ACTION_STYLE`)."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import as_run, mark_panel, new_figure, span_end, task_boundaries

ACTION_STYLE = {  # marker, colour, vertical offset within a layer's row
    "freeze": ("s", "tab:red", -0.22),
    "merge": ("o", "tab:blue", 0.0),
    "merge-skipped": ("x", "tab:gray", 0.0),
    "grow": ("^", "tab:green", 0.22),
}


def _event_layer(e: dict) -> str:
    return "(model)" if e.get("tower") is None else f"{e['tower']}.{e.get('block')}"


def event_timeline(run) -> Figure:
    """Merge / grow / freeze events over global steps; y = adapter layer, marker and colour = action."""
    run = as_run(run)
    layers = run.layers()
    for e in run.events:
        name = _event_layer(e)
        if name not in layers:
            layers.append(name)
    if not layers:
        layers = ["(model)"]
    ypos = {name: i for i, name in enumerate(layers)}
    steps = [e["step"] for e in run.events]
    end = span_end(run, steps)
    fig = new_figure(9.5, 1.6 + 0.28 * len(layers))
    ax = mark_panel(fig.add_subplot(1, 1, 1), "events")
    actions = list(ACTION_STYLE) + sorted({e["action"] for e in run.events} - set(ACTION_STYLE))
    for action in actions:
        chosen = [e for e in run.events if e["action"] == action]
        if not chosen:
            continue
        marker, colour, offset = ACTION_STYLE.get(action, ("d", "black", 0.0))
        ax.scatter([e["step"] for e in chosen], [ypos[_event_layer(e)] + offset for e in chosen], marker=marker,
                   s=22, color=colour, label=f"{action} ({len(chosen)})", zorder=6,
                   linewidths=1.2 if marker == "x" else 0.4, edgecolors=None if marker == "x" else "white")
    ax.set_yticks(range(len(layers)), layers, fontsize=7 if len(layers) > 16 else 8)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_xlim(0, max(end, max(steps, default=0)) * 1.01)
    ax.grid(axis="y", color="0.92", linewidth=0.8)
    task_boundaries(ax, run, max(end, max(steps, default=0)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step (global)")
    ax.set_ylabel("layer (tower.block)")
    if run.events:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="action")
    else:
        ax.text(0.5, 0.5, f"no merge / grow / freeze events in this run ({run.what})",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.3",
                bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round"})
    fig.suptitle(f"Expert lifecycle events — {run.name} ({run.what})", fontsize=10)
    return fig
