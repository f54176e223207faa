"""Percentile bootstrap intervals of a mean over seeds (scipy.stats.bootstrap, seeded), shared by the RL and
plasticity studies' tables. `mtil report --paired` keeps its own settings (configs/report.yaml)."""
from __future__ import annotations

import warnings

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95


def interval(a, b=None) -> dict:
    """Mean of `a` (or mean(a) - mean(b)) with its bootstrap interval; lo/hi are None under 2 seeds a side."""
    samples = [np.asarray(a, float)] + ([] if b is None else [np.asarray(b, float)])
    mean = float(samples[0].mean() - (samples[1].mean() if b is not None else 0.0))
    if min(len(s) for s in samples) < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": [len(s) for s in samples]}
    lo, hi = bootstrap_mean(samples)
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": [len(s) for s in samples]}


def bootstrap_mean(samples, axis: int = 0):
    """Percentile interval of mean(samples[0]) (- mean(samples[1])) along `axis`, each sample resampled on its own."""
    from scipy.stats import bootstrap

    def stat(*xs, axis):
        return xs[0].mean(axis) - (xs[1].mean(axis) if len(xs) > 1 else 0.0)

    if all(np.all(s == s.flat[0]) for s in samples):  # no spread: scipy warns and the interval is the point
        point = stat(*samples, axis=axis)
        return point, point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(tuple(samples), stat, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                        method="percentile", axis=axis, rng=np.random.default_rng(0), vectorized=True)
    return res.confidence_interval.low, res.confidence_interval.high
