"""The paper's Fig. 2 (training accuracy over steps for every method, chunk boundaries marked) and the
lost-plasticity diagnostics per chunk (plasticity gap, effective rank, dead ReLU units per MLP layer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2:
        return y
    window = min(window, len(y))
    c = np.cumsum(np.insert(y, 0, 0.0))
    i = np.arange(len(y))
    lo = np.maximum(0, i + 1 - window)  # trailing moving average, shorter at the start
    return (c[i + 1] - c[lo]) / (i + 1 - lo)


def _save(fig, out: Path, stem: str, dpi: int) -> list[Path]:
    from ..plots.common import save_figures   # matplotlib only when drawing
    return save_figures(fig, out, stem, dpi=dpi, tight=False)


def _band(ax, x, mean, std, n, **kw):
    mean = np.array(mean, dtype=float)  # None (not measured that chunk) -> nan: a gap in the line
    std = np.array(std, dtype=float)
    (line,) = ax.plot(x, mean, marker="o", ms=3, lw=1.3, **kw)
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    return line


def plot_diagnostics(summary: dict, out: Path, chunks: int, dpi: int = 150) -> list[Path]:
    """diagnostics.png / .svg: per chunk and method, the plasticity gap (to the reset control, with its interval,
    when the study ran one), the effective rank of h2, accuracy on the newest chunk, and one panel per method with its dead-unit share per MLP layer (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_dead = [s for s in summary.values() if "dead" in s]
    cols = 4
    rows = 1 + -(-len(with_dead) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    x = np.arange(1, chunks + 1)
    top = [("gap", "plasticity gap (points): fresh − continued", 100.0), ("eff_rank", "effective rank of h2", 1.0),
           ("acc_new", "accuracy on the newest chunk (%)", 100.0), ("acc_seen", "accuracy on chunks 1..c (%)", 100.0)]
    if any("gap_reset" in s for s in summary.values()):
        top[0] = ("gap_reset", "gap to the reset control (points), 95% CI", 100.0)
    for ax, (key, title, scale) in zip(axes[0], top):
        for i, s in enumerate(summary.values()):  # one colour per method in every panel
            if key == "gap_reset" and key in s:
                cells = s[key]
                (line,) = ax.plot(x, [100 * c["mean"] for c in cells], marker="o", ms=3, lw=1.3, label=s["label"],
                                  color=f"C{i}")
                if cells[0]["lo"] is not None:
                    ax.fill_between(x, [100 * c["lo"] for c in cells], [100 * c["hi"] for c in cells],
                                    color=line.get_color(), alpha=0.2, lw=0)
            elif f"{key}_mean" in s:
                mean = [None if m is None else scale * m for m in s[f"{key}_mean"]]
                std = [None if d is None else scale * d for d in s[f"{key}_std"]]
                _band(ax, x, mean, std, len(s["seeds"]), label=s["label"], color=f"C{i}")
        if key in ("gap", "gap_reset"):
            ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(title, fontsize=9)
    for ax, s in zip(axes[1:].ravel(), with_dead):
        for layer, band in s["dead"].items():
            _band(ax, x, [100 * m for m in band["mean"]], [100 * d for d in band["std"]], len(s["seeds"]), label=layer)
        ax.set_ylim(-3, 103)
        ax.axhline(50, color="0.6", lw=0.8, ls=":")
        ax.set_title(f"{s['label']}: dead ReLU units (%)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    for ax in axes[1:].ravel()[len(with_dead):]:
        ax.axis("off")
    for ax in axes.ravel():
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("chunk", fontsize=8)
    handles, labels = axes[0][1].get_legend_handles_labels()
    seeds = next(iter(summary.values()))["seeds"] if summary else []
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=min(len(labels), 7), fontsize=8,
               frameon=False)
    fig.suptitle(f"Lost-plasticity diagnostics (held-out probe batch; mean ± std over {len(seeds)} seeds)"
                 if len(seeds) > 1 else "Lost-plasticity diagnostics (held-out probe batch)", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return _save(fig, out, "diagnostics", dpi)


def plot_training_accuracy(summary: dict, out: Path, steps_per_chunk: int, chunks: int, smooth: int = 1,
                           dpi: int = 150) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for s in summary.values():
        x = np.asarray(s["steps"])
        mean = _smooth(np.asarray(s["train_acc_mean"]), smooth)
        std = _smooth(np.asarray(s["train_acc_std"]), smooth)
        (line,) = ax.plot(x, mean, label=s["label"], lw=1.4)
        if len(s["seeds"]) > 1:
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    for c in range(1, chunks):
        ax.axvline(c * steps_per_chunk, color="0.8", lw=0.8, ls=":", zorder=0)
    seeds = next(iter(summary.values()))["seeds"] if summary else []
    ax.set_xlabel("training step (dotted lines: chunk starts, where methods expand)")
    ax.set_ylabel("training accuracy" + (f" (mean ± std, {len(seeds)} seeds)" if len(seeds) > 1 else ""))
    ax.set_title("Training accuracy on the chunked stream")
    ax.set_xlim(0, steps_per_chunk * chunks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, out, "training_accuracy", dpi)
