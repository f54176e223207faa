"""`training_curves`: the live curves a run logged to TensorBoard (RUN_DIR/tensorboard, `output.trackers`) as one
still figure: loss and learning rate, the experts' selection entropy per layer with the policy's events, and the
accuracy rows with the running Transfer / Avg / Last, over global steps with task boundaries marked."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..rundir.layout import RunDir
from .common import MissingData, as_run, mark_panel, new_figure, span_end, task_boundaries
from .events import ACTION_STYLE


def _series(scalars: dict, tag: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted({s: v for s, v, _ in scalars.get(tag, [])}.items())   # a resumed run's repeats: the later one
    return np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)


def training_curves(run) -> Figure:
    """Four panels from the run's TensorBoard scalars; MissingData without them (or without tensorboard)."""
    run = as_run(run)
    folder = RunDir(run.path).tensorboard
    if not folder.is_dir():
        raise MissingData(f"{run.path} has no TensorBoard curves ({folder} missing: output.trackers was none, or "
                          "tensorboard was not installed)")
    try:
        from ..engine.tracking import read_scalars
        scalars = read_scalars(folder)
    except ImportError:
        raise MissingData("reading TensorBoard curves needs the tensorboard package (pip install tensorboard)") \
            from None
    if not scalars:
        raise MissingData(f"{folder} holds no curves")
    end = span_end(run, [int(s) for points in scalars.values() for s, _, _ in points])
    fig = new_figure(11, 6.4)
    axes = fig.subplots(2, 2, sharex=True)
    loss, lr, experts, acc = axes.ravel()
    x, y = _series(scalars, "train/loss")
    mark_panel(loss, "loss").plot(x, y, color="tab:blue", marker=".", linewidth=1.2, label="loss")
    for tag in sorted(t for t in scalars if t.startswith("train/loss_")):
        loss.plot(*_series(scalars, tag), linewidth=0.9, linestyle=":", label=tag.split("_", 1)[1])
    loss.set_ylabel("training loss")
    if "train/loss" in scalars:
        loss.legend(fontsize=7.5, frameon=False)
    else:
        loss.text(0.5, 0.5, "no step logged (train.log_every > train.iterations, or 0)", ha="center", va="center",
                  transform=loss.transAxes)
    mark_panel(lr, "lr").plot(*_series(scalars, "train/lr"), color="tab:gray", marker=".", linewidth=1.2)
    lr.set_ylabel("learning rate")
    entropy = sorted(t for t in scalars if t.startswith("moe/entropy/"))
    mark_panel(experts, "experts")
    for tag in entropy:
        experts.plot(*_series(scalars, tag), linewidth=1.0, alpha=0.8, label=tag.rsplit("/", 1)[1])
    for tag in sorted(t for t in scalars if t.startswith("events/")):
        action = tag.split("/", 1)[1]
        steps, _ = _series(scalars, tag)
        marker, colour, _ = ACTION_STYLE.get(action, ("|", "black", 0.0))
        experts.plot(steps, np.zeros_like(steps), linestyle="none", marker=marker, color=colour, markersize=6,
                     label=action, clip_on=False)
    experts.set_ylabel("selection entropy (nats)")
    experts.set_xlabel("training step (global)")
    if entropy or any(t.startswith("events/") for t in scalars):
        experts.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        experts.text(0.5, 0.5, "no experts (a baseline method)", ha="center", va="center",
                     transform=experts.transAxes)
    mark_panel(acc, "accuracy")
    for name in run.tasks:   # one line per dataset, in the task order
        if f"accuracy/{name}" in scalars:
            acc.plot(*_series(scalars, f"accuracy/{name}"), marker="o", markersize=3, linewidth=0.9, alpha=0.7,
                     label=name)
    for key, colour in (("transfer", "black"), ("avg", "tab:red"), ("last", "tab:purple")):
        if f"metrics/{key}" in scalars:
            acc.plot(*_series(scalars, f"metrics/{key}"), color=colour, linewidth=2.2, linestyle="--",
                     label=key.capitalize())
    acc.set_ylabel("accuracy (%)")
    acc.set_xlabel("training step (global)")
    acc.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in (loss, lr):
        task_boundaries(ax, run, end)   # names above the top row
    for ax in (experts, acc):
        for start in range(run.iterations or end, end, run.iterations or end):
            ax.axvline(start, color="black", linestyle="--", linewidth=0.9, alpha=0.7)
    loss.set_xlim(0, end)
    fig.suptitle(f"Training curves of {run.name} ({run.what}) as TensorBoard shows them "
                 f"(tensorboard --logdir {folder.parent.name}/)", fontsize=10)
    return fig
