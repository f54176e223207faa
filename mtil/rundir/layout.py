"""The layout of a run directory written by `mtil run`: one name per file, nowhere else."""
from __future__ import annotations

import os
from pathlib import Path

CONFIG = "config.yaml"              # the resolved config the run was started with
RESULTS = "results.json"            # matrix, metrics, params, versions: the run's answer
EVENTS = "events.jsonl"             # one line per policy action (merge, freeze, grow, skipped)
USAGE = "usage.npz"                 # per-task expert selection counts, router-weight snapshots
CHECKPOINT = "checkpoints/last.pt"  # everything --resume needs (never the frozen backbone)
FIGURES = "figures"                 # `mtil plot` output
TENSORBOARD = "tensorboard"         # live curves (output.trackers: tensorboard), `tensorboard --logdir` reads them


class RunDir:
    """Paths of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    results = property(lambda self: self.path / RESULTS)
    events = property(lambda self: self.path / EVENTS)
    usage = property(lambda self: self.path / USAGE)
    checkpoint = property(lambda self: self.path / CHECKPOINT)
    figures = property(lambda self: self.path / FIGURES)
    tensorboard = property(lambda self: self.path / TENSORBOARD)

    def finished(self) -> bool:
        return os.path.exists(self.results)   # not Path.exists: a path the OS refuses (too long) holds no run

    def has_run(self) -> bool:
        """A finished run or one that can be resumed."""
        return os.path.exists(self.results) or os.path.exists(self.checkpoint)
