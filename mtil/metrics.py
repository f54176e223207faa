"""MTIL metrics (ZSCL definitions) on a T x T accuracy matrix A, A[i][j] = accuracy (%) on task j after task i.

  transfer   = mean over j = 2..T of (mean over i < j of A[i][j])   zero-shot ability on not-yet-learned tasks
  avg        = mean of all T x T entries
  last       = mean of the last row
  bwt        = mean over j < T of (A[T][j] - A[j][j])                 backward transfer (negative = forgetting)
  forgetting = mean over j < T of (max over j <= i < T of A[i][j] - A[T][j])
Per-dataset values: transfer_j (for j >= 2), last_j, avg_j (column mean).
"""
from __future__ import annotations

import numpy as np

from .errors import MtilError


def summarize(matrix, names: list[str] | None = None) -> dict:
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise MtilError(f"metrics need a square T x T accuracy matrix, got shape {a.shape}")
    t = a.shape[0]
    names = list(names) if names is not None else [f"task{j}" for j in range(t)]
    transfer_j = {names[j]: float(a[:j, j].mean()) for j in range(1, t)}
    out = {
        "transfer": float(np.mean(list(transfer_j.values()))) if t > 1 else float("nan"),
        "avg": float(a.mean()),
        "last": float(a[-1].mean()),
        "bwt": float(np.mean([a[-1, j] - a[j, j] for j in range(t - 1)])) if t > 1 else 0.0,
        "forgetting": float(np.mean([a[j:t - 1, j].max() - a[-1, j] for j in range(t - 1)])) if t > 1 else 0.0,
        "per_dataset": {
            names[j]: {"transfer": transfer_j.get(names[j]), "avg": float(a[:, j].mean()), "last": float(a[-1, j])}
            for j in range(t)
        },
    }
    return out


def mean_std(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over seeds along `axis`; the std of a single seed is 0. Every table and band
    over seeds in mtil (report, compare figure, plasticity study, RL study) uses this one definition."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    std = v.std(axis=axis, ddof=1) if n > 1 else np.zeros_like(v.mean(axis=axis))
    return v.mean(axis=axis), std


def fmt_mean_std(values, digits: int = 1, scale: float = 1.0) -> str:
    """'m ± s' over seeds (just 'm' for one seed, 'n/a' for none), each rounded as ZSCL's np.around (half to even)."""
    v = np.asarray(values, dtype=np.float64).ravel() * scale
    if len(v) == 0:
        return "n/a"
    mean, std = mean_std(v)
    text = f"{np.around(mean, digits):.{digits}f}"
    return text if len(v) == 1 else f"{text} ± {np.around(std, digits):.{digits}f}"
