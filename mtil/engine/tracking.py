"""Live curves of a run through accelerate's trackers (`output.trackers`): TensorBoard, W&B or MLflow.

`tracker_choice(cfg.output.trackers)` says which tracker the run's `Accelerator(log_with=...)` gets: `auto` is
TensorBoard when its package imports, else none (silently: nothing was asked for by name); a named tracker whose
package does not import is skipped with one warning line that says why, and the run goes on with identical results.
`RunTracker` then logs, on the main process only:
  * at every `train.log_every` step: `train/loss`, `train/lr`, each loss term the method reports
    (`train/loss_<term>`: ce, distill, l2, balance) and, for the MoE method, per adapter layer the entropy (nats) and
    the top expert's share of the expert selections since the last logged step (`moe/entropy/<layer>`,
    `moe/top_share/<layer>`; with top-k routing a share is at most 1/k);
  * each policy action (merge / freeze / grow / skip) as `events/<action>`: the layers it touched at its step;
  * after each task t (at global step (t+1) x iterations): `accuracy/<dataset>` (the matrix row) and the running
    `metrics/transfer|avg|last` (`running_metrics`: the ZSCL definitions over the rows so far; after the last row
    they are results.json's values);
  * the resolved config as hyper-parameters.
TensorBoard writes into `RUN_DIR/tensorboard/`; W&B and MLflow runs are named after the run directory (`mtil
compare`'s cells: `<policy|method>-seed<k>`), in the project / experiment `mtil`.
"""
from __future__ import annotations

import importlib
import logging
import math
from collections import Counter
from pathlib import Path

import torch

from .. import config
from ..rundir.layout import TENSORBOARD

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "wandb", "mlflow")
MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PROJECT = "mtil"


def tracker_choice(setting: str) -> str | None:
    """The tracker to log with (None: none); a named one whose package does not import is one warning line."""
    if setting == "none":
        return None
    name = "tensorboard" if setting == "auto" else setting
    try:
        importlib.import_module(MODULES[name])
    except Exception as e:   # ImportError, or a broken install that fails while importing
        if setting != "auto":
            log.warning("output.trackers=%s skipped: %s does not import (%s: %s); install it (pip install %s) or "
                        "set output.trackers=none", name, MODULES[name], type(e).__name__, e, name)
        else:
            log.info("no live curves: tensorboard is not installed (pip install tensorboard; "
                     "output.trackers=none silences this)")
        return None
    return name


def running_metrics(rows: list[list[float]]) -> dict[str, float]:
    """Transfer / Avg / Last of the rows so far (row i = after task i, one column per task of the sequence):
    transfer = mean over columns j >= 1 of the mean of their rows i < j seen so far, avg = mean of every entry seen,
    last = mean of the latest row. With every row these are `metrics.summarize`'s."""
    n = len(rows)
    cols = len(rows[0])
    transfer = [sum(rows[i][j] for i in range(min(j, n))) / min(j, n) for j in range(1, cols)]
    out = {"avg": sum(map(sum, rows)) / (n * cols), "last": sum(rows[-1]) / cols}
    if transfer:
        out["transfer"] = sum(transfer) / len(transfer)
    return out


def selection_stats(names: list[str], counts: torch.Tensor) -> dict[str, float]:
    """Per layer, the entropy (nats) and the top expert's share of selection counts [L, E]; layers without
    selections are left out."""
    counts = counts.double().cpu()
    total = counts.sum(dim=1, keepdim=True)
    out = {}
    for name, row, t in zip(names, counts, total[:, 0]):
        if t <= 0:
            continue
        p = row / t
        nz = p[p > 0]
        out[f"moe/entropy/{name}"] = float(-(nz * nz.log()).sum())
        out[f"moe/top_share/{name}"] = float(p.max())
    return out


def hyperparameters(cfg) -> dict:
    """The resolved config flattened to `a.b: value` with values a tracker takes (lists and mappings as text)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in config.flatten(config.unwrap(cfg)).items()}


class RunTracker:
    """One run's trackers on its `accelerator` (built with `log_with=tracker_choice(...)`); a no-op without one."""

    def __init__(self, accelerator, cfg, out: Path, method, iterations: int):
        self.accelerator, self.cfg, self.out, self.method = accelerator, cfg, Path(out), method
        self.iterations = iterations
        self.active = bool(accelerator.log_with)
        self._events_seen = 0
        self._counts = None   # (task, selection counts [L, E]) at the last logged step

    def start(self, global_step: int = 0) -> None:
        """Open the run's trackers (after the run directory is the run's); a resume continues from `global_step`
        (TensorBoard hides the points a killed run logged after it)."""
        self._events_seen = len(self.method.events)
        if not self.active:
            return
        name = self.out.resolve().name
        kwargs = {"tensorboard": {"purge_step": global_step + 1} if global_step else {},
                  "wandb": {"name": name, "dir": str(self.out)}, "mlflow": {"run_name": name}}
        project = TENSORBOARD if "tensorboard" in self._names() else PROJECT   # TensorBoard: the subfolder
        self.accelerator.init_trackers(project, config=hyperparameters(self.cfg), init_kwargs=kwargs)
        log.debug("logging to %s", ", ".join(self._names()))

    def _names(self) -> list[str]:
        return [str(t) for t in self.accelerator.log_with]

    def train_step(self, ctx, loss: float, lr: float) -> None:
        """The Trainer's hook at every `train.log_every` step."""
        if not self.active:
            return
        values = {"train/loss": loss, "train/lr": lr}
        values.update({f"train/loss_{k}": float(v) for k, v in self.method.loss_terms.items()})
        selections = self.method.selection_counts()
        if selections is not None:
            names, counts = selections
            counts = counts.detach().cpu()
            task, previous = self._counts or (None, None)
            fresh = task != ctx.task or previous.shape != counts.shape   # each task's counts start from zero
            self._counts = (ctx.task, counts)
            values.update(selection_stats(names, counts if fresh else counts - previous))
        self._log(values, ctx.global_step)
        self.events()

    def events(self) -> None:
        """Log the policy actions not logged yet: per (step, action) the number of layers it touched."""
        new = self.method.events[self._events_seen:]
        self._events_seen = len(self.method.events)
        if not self.active or not new:
            return
        for (step, action), n in sorted(Counter((e["step"], e["action"]) for e in new).items()):
            self._log({f"events/{action}": n}, step)

    def row(self, task: int, names: list[str], rows: list[list[float]]) -> None:
        """After task `task`'s evaluation: its accuracy row and the running Transfer / Avg / Last."""
        self.events()
        if not self.active:
            return
        values = {f"accuracy/{n}": a for n, a in zip(names, rows[-1])}
        values.update({f"metrics/{k}": v for k, v in running_metrics(rows).items() if math.isfinite(v)})
        self._log(values, (task + 1) * self.iterations)

    def _log(self, values: dict, step: int) -> None:
        self.accelerator.log(values, step=step)

    def close(self) -> None:
        if self.active:
            self.accelerator.end_training()
            self.active = False


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """The scalars a TensorBoard folder holds (RUN_DIR/tensorboard): tag -> [(step, value, wall time)], in the
    order written; needs the tensorboard package."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})   # 0: every point
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
