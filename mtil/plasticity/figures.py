"""The paper's Fig. 2: training accuracy over steps for every method, with chunk boundaries marked."""
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
    paths = [Path(out) / "training_accuracy.png", Path(out) / "training_accuracy.svg"]
    for p in paths:
        tmp = p.with_name(f".tmp.{p.name}")
        fig.savefig(tmp, dpi=dpi, format=p.suffix[1:])
        tmp.replace(p)
    plt.close(fig)
    return paths
