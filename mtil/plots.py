"""Figures of a run directory, and the policy comparison figure of `mtil compare`.

Every function returns a `matplotlib.figure.Figure` built directly (an Agg canvas attached, no pyplot, no global
matplotlib state touched), so the library is safe to call from servers, tests and notebooks alike:

  fixed_expert_heatmap(run)        frozen ("fixed") experts per encoder block after each task, one panel per tower
  usage_heatmap(run, tower)        each task's share of top-k selections per block x expert, one panel per task
  accuracy_matrix(run)             A[i][j] with values; Transfer / Avg / Last in the title when the run is complete
  router_weights(run, layer)       mean gate weight per expert of one layer over training, task boundaries marked
  event_timeline(run)              merge / grow / freeze events over global steps, one row per layer
  compare_policies(by_policy)      per-dataset Last and Transfer / Avg / Last, mean ± std over seeds, per policy

`plot_run(run_dir)` writes the run figures into RUN_DIR/figures (atomically), skipping, with a log line, those the
run has no data for. `run` arguments accept a `RunRecord` or a run directory path.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from .errors import MtilError
from .rundir.read import TOWERS, RunRecord, load_run

log = logging.getLogger(__name__)

FIGURES = ("fixed_experts", "usage_image", "usage_text", "accuracy_matrix", "router_weights", "events")
DEFAULT_LAYER = "image.0"
ACTION_STYLE = {  # marker, colour, vertical offset within a layer's row
    "freeze": ("s", "tab:red", -0.22),
    "merge": ("o", "tab:blue", 0.0),
    "merge-skipped": ("x", "tab:gray", 0.0),
    "grow": ("^", "tab:green", 0.22),
}
PANEL = "panel:"


class MissingData(MtilError):
    """The run has no data for this figure (e.g. no text-tower adapters); `plot_run` skips the figure."""


# ---- helpers ------------------------------------------------------------------------------------------------------
def _as_run(run) -> RunRecord:
    return run if isinstance(run, RunRecord) else load_run(run)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mark_panel(ax, name: str):
    ax.set_label(PANEL + name)
    return ax


def panel_axes(fig: Figure) -> list:
    """The data panels of a figure made here (colour bars and other helper axes excluded)."""
    return [ax for ax in fig.axes if str(ax.get_label()).startswith(PANEL)]


def _text_colour(cmap, norm, value) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _annotate(ax, data: np.ndarray, fmt: Callable[[float], str], cmap, norm, fontsize: float = 8) -> None:
    for (i, j), value in np.ndenumerate(data):
        if np.isnan(value):
            continue
        ax.text(j, i, fmt(value), ha="center", va="center", fontsize=fontsize,
                color=_text_colour(cmap, norm, value))


def _heatmap(ax, data: np.ndarray, cmap_name: str, vmin: float, vmax: float):
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


def _task_labels(run: RunRecord, count: int) -> list[str]:
    names = [str(t) for t in run.usage.get("tasks", [])] or run.tasks
    names = names + run.tasks[len(names):]
    return [f"{k + 1}. {names[k]}" for k in range(count)]


def _span_end(run: RunRecord, steps: Iterable[int] = ()) -> int:
    steps = list(steps)
    if run.iterations:
        return len(run.tasks) * run.iterations
    return max(steps) if steps else 1


def _task_boundaries(ax, run: RunRecord, end: int) -> None:
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


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


# ---- 1. fixed experts ---------------------------------------------------------------------------------------------
def fixed_expert_heatmap(run, value: str = "frozen") -> Figure:
    """x = encoder block, y = task, colour (and number) = experts frozen after that task; one panel per tower.

    `value="active"` shows the active experts instead (the grow policy's expert count)."""
    run = _as_run(run)
    if value not in ("frozen", "active"):
        raise MtilError(f"value must be 'frozen' or 'active', got {value!r}")
    towers = [t for t in run.towers if run.usage[f"{t}_{value}"].shape[0] > 0]
    if not towers:
        raise MissingData(f"{run.path} has no per-task expert counts yet (usage.npz missing or no task finished)")
    num_experts = max(run.usage[f"{t}_usage"].shape[2] for t in towers)
    rows = max(run.usage[f"{t}_{value}"].shape[0] for t in towers)
    width = sum(1.2 + 0.5 * len(run.usage[f"{t}_blocks"]) for t in towers) + 2.4
    fig = _figure(max(width, 5.5), 1.8 + 0.42 * rows)
    axes = []
    for n, tower in enumerate(towers):
        data = run.usage[f"{tower}_{value}"].astype(float)
        blocks = run.usage[f"{tower}_blocks"]
        ax = _mark_panel(fig.add_subplot(1, len(towers), n + 1), tower)
        image, cmap, norm = _heatmap(ax, data, "YlGnBu", 0, num_experts)
        _annotate(ax, data, lambda v: f"{int(v)}", cmap, norm, fontsize=8 if data.size < 150 else 6)
        ax.set_xticks(range(len(blocks)), [str(int(b)) for b in blocks])
        ax.set_yticks(range(data.shape[0]), _task_labels(run, data.shape[0]) if n == 0 else [""] * data.shape[0])
        ax.set_xlabel("encoder block")
        ax.set_title(f"{tower} encoder")
        axes.append(ax)
    axes[0].set_ylabel("after task")
    what = "Fixed (frozen) experts" if value == "frozen" else "Active experts"
    fig.colorbar(image, ax=axes, label=f"{value} experts (of {num_experts} per block)", shrink=0.9)
    title = f"{what} per encoder block after each task — {run.name} (policy {run.policy})"
    if value == "frozen" and all(run.usage[f"{t}_frozen"].max(initial=0) == 0 for t in towers):
        title += f"\npolicy '{run.policy}' froze no expert in this run"
        if run.policy == "grow":
            title += "; fixed_expert_heatmap(run, value='active') shows how many experts it activated"
    fig.suptitle(title, fontsize=10)
    return fig


# ---- 2. expert usage ----------------------------------------------------------------------------------------------
def _frozen_cells(run: RunRecord, tower: str) -> dict[int, list[tuple[int, int]]]:
    """task -> (block, expert) cells frozen at that task's end, from the freeze events."""
    out: dict[int, list[tuple[int, int]]] = {}
    for e in run.events:
        if e.get("action") == "freeze" and e.get("tower") == tower and e.get("block") is not None:
            out.setdefault(int(e.get("task", -1)), []).extend((int(e["block"]), int(x)) for x in e.get("experts", []))
    return out


def usage_heatmap(run, tower: str = "image") -> Figure:
    """One panel per task: share of each block's top-k selections that went to each expert during that task."""
    run = _as_run(run)
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
    fig = _figure(ncols * panel_w + 1.4, nrows * panel_h + 1.0)
    labels = _task_labels(run, num_tasks)
    axes = []
    vmax = max(float(share.max()), 1e-9)
    for t in range(num_tasks):
        ax = _mark_panel(fig.add_subplot(nrows, ncols, t + 1), f"task{t}")
        image, cmap, norm = _heatmap(ax, share[t], "Purples", 0, vmax)
        if num_blocks * num_experts <= 48:
            _annotate(ax, share[t] * 100, lambda v: f"{v:.0f}", cmap, Normalize(0, vmax * 100), fontsize=6.5)
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
    title = f"Expert usage per task, {tower} tower — {run.name} (policy {run.policy})"
    if frozen:
        title += "\nred outline: expert frozen at the end of that task"
    fig.suptitle(title, fontsize=10)
    return fig


# ---- 3. accuracy matrix -------------------------------------------------------------------------------------------
def accuracy_matrix(run) -> Figure:
    """A[i][j] (top-1 %, row i = after training task i) with values; the diagonal outlined."""
    run = _as_run(run)
    tasks = run.tasks
    if not run.matrix:
        raise MissingData(f"{run.path} has no evaluated row yet")
    data = np.asarray(run.matrix, dtype=float)
    fig = _figure(2.4 + 0.75 * len(tasks), 2.0 + 0.5 * data.shape[0])
    ax = _mark_panel(fig.add_subplot(1, 1, 1), "matrix")
    image, cmap, norm = _heatmap(ax, data, "viridis", 0, 100)
    _annotate(ax, data, lambda v: f"{v:.1f}", cmap, norm, fontsize=8 if len(tasks) <= 8 else 6.5)
    for i in range(min(data.shape)):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.8))
    ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(data.shape[0]), [f"after {t}" for t in tasks[:data.shape[0]]])
    ax.set_xlabel("evaluated on (right of the diagonal: not learned yet)")
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)", shrink=0.9)
    r = run.results
    title = f"Accuracy matrix — {run.name}: policy {run.policy}, eval {r.get('eval_mode', '?')}"
    if run.complete:
        title += (f"\nTransfer {_fmt(r.get('transfer'))}   Avg {_fmt(r.get('avg'))}   Last {_fmt(r.get('last'))}"
                  f"   BWT {_fmt(r.get('bwt'))}")
    else:
        title += f"\n(partial run: {data.shape[0]} of {len(tasks)} tasks evaluated)"
    ax.set_title(title, fontsize=10)
    return fig


# ---- 4. router weights --------------------------------------------------------------------------------------------
def _parse_layer(run: RunRecord, layer: str) -> tuple[str, int]:
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
    layers = _as_run(run).layers()
    return DEFAULT_LAYER if DEFAULT_LAYER in layers else (layers[0] if layers else None)


def _expert_colours(num_experts: int) -> list:
    from matplotlib import colormaps
    if num_experts <= 10:
        return [colormaps["tab10"](e) for e in range(num_experts)]
    if num_experts <= 20:
        return [colormaps["tab20"](e) for e in range(num_experts)]
    return [colormaps["turbo"](e / max(num_experts - 1, 1)) for e in range(num_experts)]


def router_weights(run, layer: str = DEFAULT_LAYER) -> Figure:
    """Stacked mean gate weight of each expert of one layer over training steps, task boundaries marked."""
    run = _as_run(run)
    tower, row = _parse_layer(run, layer)
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
    end = _span_end(run, steps)
    fig = _figure(9.5, 4.2)
    ax = _mark_panel(fig.add_subplot(1, 1, 1), layer)
    colours = _expert_colours(num_experts)
    ax.stackplot(x, *(y[:, e] for e in used), labels=[f"expert {e}" for e in used],
                 colors=[colours[e] for e in used], step="pre", linewidth=0)
    ax.set_xlim(0, max(end, steps[-1]))
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _task_boundaries(ax, run, max(end, int(steps[-1])))
    ax.set_xlabel("training step (global)")
    ax.set_ylabel("mean gate weight")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False,
              ncols=1 if len(used) <= 14 else 2, title="expert", title_fontsize=8)
    router = (run.config.get("moe") or {}).get("router") if isinstance(run.config.get("moe"), dict) else None
    note = {"per_task": "one router per task", "shared": "one shared router"}.get(router, "")
    fig.suptitle(f"Router weights of layer {layer} — {run.name} (policy {run.policy}"
                 f"{'; ' + note if note else ''})", fontsize=10)
    return fig


# ---- 5. event timeline --------------------------------------------------------------------------------------------
def _event_layer(e: dict) -> str:
    return "(model)" if e.get("tower") is None else f"{e['tower']}.{e.get('block')}"


def event_timeline(run) -> Figure:
    """Merge / grow / freeze events over global steps; y = adapter layer, marker and colour = action."""
    run = _as_run(run)
    layers = run.layers()
    for e in run.events:
        name = _event_layer(e)
        if name not in layers:
            layers.append(name)
    if not layers:
        layers = ["(model)"]
    ypos = {name: i for i, name in enumerate(layers)}
    steps = [e["step"] for e in run.events]
    end = _span_end(run, steps)
    fig = _figure(9.5, 1.6 + 0.28 * len(layers))
    ax = _mark_panel(fig.add_subplot(1, 1, 1), "events")
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
    _task_boundaries(ax, run, max(end, max(steps, default=0)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step (global)")
    ax.set_ylabel("layer (tower.block)")
    if run.events:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="action")
    else:
        ax.text(0.5, 0.5, f"no merge / grow / freeze events in this run (policy '{run.policy}')",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.3",
                bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round"})
    fig.suptitle(f"Expert lifecycle events — {run.name} (policy {run.policy})", fontsize=10)
    return fig


# ---- 6. policy comparison -----------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), 0.0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def compare_policies(results_by_policy: dict[str, list[dict]]) -> Figure:
    """Left: Last_j (final-row accuracy on each dataset) per policy; right: Transfer / Avg / Last. Mean ± std
    (sample std, ddof=1) over the seeds, i.e. the finished results.json contents given per policy."""
    groups = {}
    for policy, runs in results_by_policy.items():
        finished = [r for r in runs if r.get("complete")]
        if len(finished) < len(runs):
            log.info("compare: %d unfinished run(s) of policy %s left out", len(runs) - len(finished), policy)
        if finished:
            groups[policy] = finished
    if not groups:
        raise MtilError("no finished runs to compare; finish them with `mtil run ... --resume` or `mtil compare`")
    tasks = next(iter(groups.values()))[0]["tasks"]
    for policy, runs in groups.items():
        for r in runs:
            if r["tasks"] != tasks:
                raise MtilError(f"runs learn different task sequences ({', '.join(tasks)} vs "
                                f"{', '.join(r['tasks'])}, policy {policy}); compare runs of one sequence")
    names = list(groups)
    colours = _expert_colours(len(names))
    width = 0.8 / len(names)
    fig = _figure(max(8.0, 3.5 + 0.55 * len(tasks) * max(1, len(names) / 2) + 3.0), 4.3)
    grid = fig.add_gridspec(1, 2, width_ratios=[max(len(tasks), 3), 3])
    ax_tasks = _mark_panel(fig.add_subplot(grid[0]), "per-dataset")
    ax_summary = _mark_panel(fig.add_subplot(grid[1]), "summary")
    for n, policy in enumerate(names):
        runs = groups[policy]
        stats = [_mean_std([r["matrix"][-1][j] for r in runs]) for j in range(len(tasks))]
        offset = (n - (len(names) - 1) / 2) * width
        label = f"{policy} (n={len(runs)})"
        ax_tasks.bar(np.arange(len(tasks)) + offset, [m for m, _ in stats], width, yerr=[s for _, s in stats],
                     color=colours[n], label=label, capsize=2, error_kw={"linewidth": 0.8})
        summary = [_mean_std([r.get(k) for r in runs]) for k in ("transfer", "avg", "last")]
        ax_summary.bar(np.arange(3) + offset, [m for m, _ in summary], width, yerr=[s for _, s in summary],
                       color=colours[n], capsize=2, error_kw={"linewidth": 0.8})
        for k, (m, s) in enumerate(summary):
            if not math.isnan(m):
                ax_summary.text(k + offset, m + s + 1.5, _fmt(m), ha="center", va="bottom", rotation=90, fontsize=7)
    ax_tasks.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", rotation_mode="anchor")
    ax_tasks.set_ylabel("Last accuracy (%) — final row")
    ax_tasks.set_title("accuracy on each dataset after the last task", fontsize=10)
    ax_summary.set_xticks(range(3), ["Transfer", "Avg", "Last"])
    ax_summary.set_title("MTIL metrics", fontsize=10)
    for ax in (ax_tasks, ax_summary):
        ax.set_ylim(0, 118)
        ax.grid(axis="y", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    fig.suptitle("Policies compared (mean ± std over seeds)", fontsize=11)
    fig.legend(loc="outside lower center", fontsize=8.5, frameon=False, ncols=min(len(names), 6))
    return fig


# ---- all figures of one run ---------------------------------------------------------------------------------------
def _check_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    supported = FigureCanvasAgg.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad or not formats:
        raise MtilError(f"unknown figure format {', '.join(bad) or '(none given)'}; use some of "
                        f"{', '.join(sorted(supported))}")
    return formats


def save_figure(fig: Figure, path: str | os.PathLike, fmt: str | None = None, dpi: int = 130) -> Path:
    """Write one figure atomically (temp file in the same folder, then `os.replace`) as `fmt` (default: the
    file's suffix). Kept free of torch imports, so reading and plotting runs stays light."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".") or "png"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        return path
    except OSError as e:
        raise MtilError(f"cannot write {path} ({e.strerror or e}); choose another output folder") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_run_figures(run_dir, out_dir=None, formats: Iterable[str] = ("png", "svg"),
                      layer: str | None = None) -> tuple[list[Path], dict[str, str]]:
    """All run figures into `out_dir` (default RUN_DIR/figures): (written paths, {skipped figure: reason})."""
    run = _as_run(run_dir)
    formats = _check_formats(formats)
    if layer is not None:
        _parse_layer(run, layer)          # a layer the user named must exist: an error, never a silent skip
    out = Path(out_dir) if out_dir is not None else run.path / "figures"
    builders: dict[str, Callable[[], Figure]] = {
        "fixed_experts": lambda: fixed_expert_heatmap(run),
        "usage_image": lambda: usage_heatmap(run, "image"),
        "usage_text": lambda: usage_heatmap(run, "text"),
        "accuracy_matrix": lambda: accuracy_matrix(run),
        "router_weights": lambda: router_weights(run, layer or default_layer(run) or DEFAULT_LAYER),
        "events": lambda: event_timeline(run),
    }
    written, skipped = [], {}
    for name, build in builders.items():
        try:
            fig = build()
        except MissingData as e:
            skipped[name] = str(e)
            log.info("figure %s skipped: %s", name, e)
            continue
        for fmt in formats:
            written.append(save_figure(fig, out / f"{name}.{fmt}", fmt))
    log.info("wrote %d figure files to %s", len(written), out)
    return written, skipped


def plot_run(run_dir, out_dir=None, formats: Iterable[str] = ("png", "svg"), layer: str | None = None) -> list[Path]:
    """Write fixed_experts, usage_image, usage_text, accuracy_matrix, router_weights and events (each in every
    format) into `out_dir` (default RUN_DIR/figures); figures the run has no data for are skipped and logged."""
    return write_run_figures(run_dir, out_dir, formats, layer)[0]
