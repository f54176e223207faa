"""Pieces every figure shares: `MissingData`, Agg figures and tagged data panels, heatmap drawing, task labels and
boundaries on a step axis, number formatting, expert colours, and `save_figure` (atomic, via `rundir.files`)."""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from ..errors import MtilError
from ..rundir.files import atomic_write
from ..rundir.read import RunRecord, load_run

PANEL = "panel:"


class MissingData(MtilError):
    """The run has no data for this figure (e.g. no text-tower adapters); `plot_run` skips the figure."""


def as_run(run) -> RunRecord:
    return run if isinstance(run, RunRecord) else load_run(run)


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure with its own Agg canvas (no pyplot, no global matplotlib state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def mark_panel(ax, name: str):
    ax.set_label(PANEL + name)
    return ax


def panel_axes(fig: Figure) -> list:
    """The data panels of a figure made here (colour bars and other helper axes excluded)."""
    return [ax for ax in fig.axes if str(ax.get_label()).startswith(PANEL)]


def _text_colour(cmap, norm, value) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def annotate(ax, data: np.ndarray, fmt: Callable[[float], str], cmap, norm, fontsize: float = 8) -> None:
    """Each non-NaN cell's value written on it, black or white for contrast with the cell's colour."""
    for (i, j), value in np.ndenumerate(data):
        if np.isnan(value):
            continue
        ax.text(j, i, fmt(value), ha="center", va="center", fontsize=fontsize,
                color=_text_colour(cmap, norm, value))


def heatmap(ax, data: np.ndarray, cmap_name: str, vmin: float, vmax: float):
    """`data` as cells separated by white lines, no spines; returns (image, cmap, norm)."""
    from matplotlib import colormaps
    cmap = colormaps[cmap_name]
    norm = Normalize(vmin=vmin, vmax=vmax)
    image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(data.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(data.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image, cmap, norm


def task_labels(run: RunRecord, count: int) -> list[str]:
    names = [str(t) for t in run.usage.get("tasks", [])] or run.tasks
    names = names + run.tasks[len(names):]
    return [f"{k + 1}. {names[k]}" for k in range(count)]


def span_end(run: RunRecord, steps: Iterable[int] = ()) -> int:
    """The last global step of the run's task sequence (or of `steps` when the run does not say)."""
    steps = list(steps)
    if run.iterations:
        return len(run.tasks) * run.iterations
    return max(steps) if steps else 1


def task_boundaries(ax, run: RunRecord, end: int) -> None:
    """Dashed lines where each task begins, the task's name centred over its span above the axes."""
    it = run.iterations
    if not it:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    small = len(run.tasks) > 6
    for k, name in enumerate(run.tasks):
        start = k * it
        if start >= end:
            break
        if k:
            ax.axvline(start, color="black", linestyle="--", linewidth=0.9, alpha=0.7, zorder=5)
        ax.text(start + it / 2, 1.01, name, transform=trans, ha="center", va="bottom",
                fontsize=7 if small else 8.5, rotation=30 if small else 0, clip_on=False)


def fmt_value(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def expert_colours(count: int) -> list:
    """`count` distinct colours (tab10, tab20, then turbo), used for experts and for policies."""
    from matplotlib import colormaps
    if count <= 10:
        return [colormaps["tab10"](e) for e in range(count)]
    if count <= 20:
        return [colormaps["tab20"](e) for e in range(count)]
    return [colormaps["turbo"](e / max(count - 1, 1)) for e in range(count)]


def save_figure(fig: Figure, path: str | os.PathLike, fmt: str | None = None, dpi: int = 130,
                tight: bool = True) -> Path:
    """Write one figure atomically (`rundir.files.atomic_write`: a file-system error is one MtilError line) as `fmt`
    (default: the file's suffix), cropped to its content unless `tight` is false."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".") or "png"
    bbox = "tight" if tight else None
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, bbox_inches=bbox), "wb")


def save_figures(fig: Figure, out: str | os.PathLike, stem: str, formats: Iterable[str] = ("png", "svg"),
                 dpi: int = 130, tight: bool = True) -> list[Path]:
    """`save_figure` as out/<stem>.<format> for each format, then close the figure (pyplot's, if it is one)."""
    import matplotlib.pyplot as plt
    paths = [save_figure(fig, Path(out) / f"{stem}.{fmt}", fmt, dpi, tight) for fmt in formats]
    plt.close(fig)
    return paths
