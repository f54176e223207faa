"""One MTIL run, start to end: the walk of DESIGN.md section 8.

config -> backbone.load -> methods.build -> method.attach (the MoE method: moe.attach + policy.attach) -> for each
task: Trainer.fit -> Evaluator.row -> results + checkpoint (atomic) -> metrics.summarize. Checkpoints hold the
adapters (routers, masks), the method's state (MoE: tracker and policy; a full fine-tuning baseline: its trained
weights and what it keeps between tasks), optimizer, scheduler and RNG states (never the frozen backbone) and the
phase reached, so `resume=True` continues mid-task, after training, or after evaluation and ends with the same matrix.

Run directory: config.yaml (resolved), results.json, events.jsonl, usage.npz, checkpoints/last.pt, figures/,
.mtil.lock (mtil.rundir.claim). results.json and every checkpoint hold the run's provenance record
(mtil.provenance); --resume continues only a checkpoint whose record is this run's.
"""
from __future__ import annotations

import logging
import os
import time
from importlib import metadata
from pathlib import Path

import torch

from .. import config, methods, metrics, protocol, provenance, rundir
from ..config import Config
from ..data import pipeline
from ..errors import MtilError, NonFiniteLoss
from ..model import backbone
from ..rundir import files
from ..rundir.claim import Claim, claim
from ..rundir.layout import CHECKPOINT, RunDir
from . import checkpoint, tracking
from .evaluate import Evaluator
from .selector import check_sizes
from .train import Trainer, TrainSettings

log = logging.getLogger(__name__)
LR_MAPS = tuple(dict.fromkeys(methods.METHODS.get(n).obj.lr_table for n in methods.METHODS))   # per-task lr tables


def versions() -> dict:
    out = {}
    for pkg in ("mtil", "torch", "open_clip_torch", "timm", "accelerate", "datasets", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def check_resumable(saved: dict, current: dict, progress: dict, rows: int, out: Path) -> None:
    """Refuse to resume a checkpoint whose provenance record is not the current run's: another config (besides the
    keys provenance.identity leaves out and, at a task boundary, the per-task lrs (LR_MAPS) of the tasks not started:
    the way on after a NaN loss), another backbone, other data. Data nothing has read yet may have changed (the
    way on after an undecodable image: re-prepare the dataset, resume): the training split of a task not started,
    every test split before the first row."""
    order = current["config"]["data"]["order"]
    started = progress["task"] + (progress["phase"] != "train" or progress["step"] > 0)
    ignore = _lr_keys_of(order[progress["task"]:], saved, current) if started == progress["task"] else []
    unread = {(n, "train") for n in order[started:]} | ({(n, "test") for n in order} if rows == 0 else set())
    diffs = provenance.differences(saved, current, ignore, unread)
    if diffs:
        raise MtilError(f"cannot resume {out}: its checkpoint was written by another run ({provenance.summary(diffs)}"
                        f"); resume with that run's config, backbone and data, or start a new --out")


def _lr_keys_of(tasks, *records: dict) -> list[str]:
    """The flat config keys of the per-task lr tables (LR_MAPS) that set one of `tasks`' lrs in any of the
    records, however each table spells the dataset (`train.lr_per_task.Cars` sets StanfordCars)."""
    wanted = {config.dataset_key(n) for n in tasks}
    out = set()
    for rec in records:
        for table in LR_MAPS:
            entries = rec["config"]
            for part in table.split("."):
                entries = entries.get(part, {}) if isinstance(entries, dict) else {}
            out.update(f"{table}.{n}" for n in entries if config.dataset_key(n) in wanted)
    return sorted(out)


def prepare_out_dir(out: Path, resume: bool) -> Claim:
    """Claim (check and lock) the run directory; a new run needs one without a run, a resume one with a
    checkpoint. Returns the claim, released when the run ends."""
    if not resume and RunDir(out).has_run():
        raise MtilError(f"'{out}' already holds a run; continue it with --resume or choose another --out")
    held = claim(out, resume)
    try:
        if resume and not RunDir(out).checkpoint.exists():
            raise MtilError(f"--resume: no checkpoint in '{out}' ({CHECKPOINT} missing); run without --resume to "
                            "start")
        if not resume and RunDir(out).has_run():
            raise MtilError(f"'{out}' already holds a run; continue it with --resume or choose another --out")
    except BaseException:
        held.release()
        raise
    return held


class Run:
    """Holds the live objects of one run; `execute()` does the task loop. It reads `cfg` and never changes it:
    a demo config comes with its assets resolved (`pretrain.resolve_demo_assets`)."""

    def __init__(self, cfg: Config, out: str | os.PathLike, resume: bool = False):
        from accelerate import Accelerator

        if cfg.data.demo and cfg.model.pretrained is None:
            raise MtilError("a data.demo config reached the run without its assets; resolve them first with "
                            "mtil.demo.pretrain.resolve_demo_assets(cfg) (mtil demo, mtil run and mtil.engine.run.run do)")
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.dir = RunDir(out)
        # every value was checked against its base.yaml rule when the config was loaded (mtil.config)
        trackers = tracking.tracker_choice(cfg.output.trackers)
        self.accelerator = Accelerator(mixed_precision="no" if cfg.model.precision == "fp32" else cfg.model.precision,
                                       log_with=trackers, project_dir=str(self.out) if trackers else None)
        self.claim = prepare_out_dir(self.out, resume) if self.accelerator.is_main_process else None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the trackers and release the run directory's lock (the run is over, or never started)."""
        if getattr(self, "tracker", None) is not None:
            self.tracker.close()
        if self.claim is not None:
            self.claim.release()

    def _build(self) -> None:
        from accelerate.utils import set_seed

        cfg, resume = self.cfg, self.resume
        self.accelerator.wait_for_everyone()
        set_seed(cfg.seed, device_specific=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)   # for the rest of the process
        self.backbone = backbone.load(cfg.model.name, cfg.model.pretrained, device=self.accelerator.device,
                                      activation=cfg.model.activation)
        self.tasks = [pipeline.load_task(cfg.data, name, cfg.seed) for name in cfg.data.order]
        self.names = [t.name for t in self.tasks]
        self.provenance = provenance.record(cfg, {n: t.fingerprint for n, t in zip(cfg.data.order, self.tasks)})
        self.method = methods.build(cfg)
        self.eval_mode = self.method.eval_mode(cfg.eval.mode)
        self.activation = ((self.provenance.get("backbone") or {}).get("activation")
                           or protocol.activation_of(self.backbone.model))
        if self.eval_mode == "selector":
            check_sizes(cfg.selector, {t.name: min(len(t.train), cfg.selector.max_fit_samples) for t in self.tasks},
                        getattr(self.backbone.model.visual, "output_dim", None))
        self.adapted = self.method.attach(self.backbone, self.accelerator, self.tasks, fresh=not resume)
        self.skipped = pipeline.Skipped()   # undecodable images skipped in this run, each counted and logged once
        self.train_settings = TrainSettings.from_config(cfg)
        self.evaluator = Evaluator(self.adapted, self.tasks, self.backbone.preprocess_val, self.backbone.tokenizer,
                                   eval_cfg=cfg.eval, selector_cfg=cfg.selector, data_cfg=cfg.data, seed=cfg.seed,
                                   shared_router=cfg.moe.router == "shared", device=self.accelerator.device,
                                   autocast=self.accelerator.autocast, skipped=self.skipped, mode=self.eval_mode)
        self.progress = {"task": 0, "phase": "train", "step": 0, "global_step": 0}
        self.rows: list[list[float]] = []
        self.selector_accuracy: list[float | None] = []
        self.params: list[dict] = []
        self.train_seconds: list[float] = []
        self.train_state = None
        self.tracker = tracking.RunTracker(self.accelerator, cfg, self.out, self.method, cfg.train.iterations)

    # ---- state --------------------------------------------------------------------------------------------------
    def state(self, train_state: dict | None = None) -> dict:
        rng = [checkpoint.rng_state()]
        if self.accelerator.num_processes > 1:
            rng = [None] * self.accelerator.num_processes
            torch.distributed.all_gather_object(rng, checkpoint.rng_state())
        return {"progress": dict(self.progress), "adapters": self.adapted.adapter_state_dict(),
                "train_state": train_state, "rng": rng, "method": self.method.state_dict(), "rows": self.rows,
                "selector_accuracy": self.selector_accuracy, "params": self.params,
                "train_seconds": self.train_seconds, "provenance": self.provenance}

    def save(self, train_state: dict | None = None) -> None:
        state = self.state(train_state)
        if self.accelerator.is_main_process:
            checkpoint.save(state, self.dir.checkpoint)
            self.write_outputs()
        self.accelerator.wait_for_everyone()

    def load(self) -> None:
        state = checkpoint.load(self.dir.checkpoint)
        check_resumable(state["provenance"], self.provenance, state["progress"], len(state["rows"]), self.out)
        if self.accelerator.is_main_process and (not self.dir.config.exists()
                                                 or rundir.read_config(self.out) != config.unwrap(self.cfg)):
            files.write_text(self.dir.config, config.dump(self.cfg))
        self.adapted.load_adapter_state_dict(state["adapters"])
        self.method.load_state_dict(state["method"])
        self.progress = state["progress"]
        self.rows, self.selector_accuracy, self.params = state["rows"], state["selector_accuracy"], state["params"]
        self.train_seconds = state["train_seconds"]
        self.train_state = state["train_state"]
        rng = state["rng"]
        checkpoint.set_rng_state(rng[self.accelerator.process_index if len(rng) > 1 else 0])
        log.info("resumed %s at task %d (%s), phase %s, step %d", self.out, self.progress["task"] + 1,
                 self.names[min(self.progress["task"], len(self.names) - 1)], self.progress["phase"], self.progress["step"])

    # ---- outputs ------------------------------------------------------------------------------------------------
    def results(self) -> dict:
        complete = len(self.rows) == len(self.tasks)
        out = {"tasks": self.names, "matrix": self.rows, "complete": complete, "method": self.cfg.method.name,
               "policy": self.cfg.policy.name if self.cfg.method.name == "moe" else None,
               "eval_mode": self.eval_mode, "seed": self.cfg.seed, "selector_accuracy": self.selector_accuracy,
               "selector": ({"method": self.cfg.selector.method, "mode": self.cfg.selector.mode}
                            if self.eval_mode == "selector" else None),
               "params": self.params, "train_seconds": self.train_seconds, "versions": versions(),
               "provenance": self.provenance,
               "protocol": protocol.record(self.cfg, self.eval_mode, self.names,
                                           self.params[-1].get("trainable") if self.params else None,
                                           self.activation)}
        if complete:
            summary = metrics.summarize(self.rows, self.names)
            out.update(summary)
        sel = [a for a in self.selector_accuracy if a is not None]
        out["selector_accuracy_mean"] = sum(sel) / len(sel) if sel else None
        return out

    def write_outputs(self) -> None:
        files.write_json(self.dir.results, self.results())
        files.write_jsonl(self.dir.events, self.method.events)
        usage = self.method.usage(self.names)
        if usage is not None:
            files.numpy_savez(self.dir.usage, **usage)

    # ---- the task loop ------------------------------------------------------------------------------------------
    def execute(self) -> dict:
        try:
            return self._execute()
        finally:
            self.close()

    def _execute(self) -> dict:
        if self.resume:
            self.load()
        if self.claim is not None:
            self.claim.keep()   # from here on the run directory holds this run's files
        if self.resume:
            if self.accelerator.is_main_process:   # rewritten from the checkpoint: repairs damaged or stale copies
                self.write_outputs()
        elif self.accelerator.is_main_process:
            files.write_text(self.dir.config, config.dump(self.cfg))
        self.tracker.start(self.progress["global_step"])
        trainer = Trainer(self.train_settings, accelerator=self.accelerator,
                          model=self.accelerator.prepare_model(self.method.module), method=self.method,
                          transform=self.backbone.preprocess_train, tokenizer=self.backbone.tokenizer,
                          skipped=self.skipped, on_log=self.tracker.train_step)
        if self.eval_mode == "selector":
            last_fitted = self.progress["task"] if self.progress["phase"] == "train" else self.progress["task"] + 1
            for t in range(last_fitted):
                self.evaluator.fit_selector(t)
        while self.progress["task"] < len(self.tasks):
            t = self.progress["task"]
            if self.progress["phase"] == "train":
                # time spent on this task before a mid-task checkpoint this run resumed from
                started = time.time() - (self.train_state or {}).get("seconds", 0.0)

                def save_mid_task(train_state, t=t):
                    self.progress.update(step=train_state["step"], global_step=train_state["global_step"])
                    self.save({**train_state, "seconds": time.time() - started})

                global_step = self.progress["global_step"]
                if self.method.trains:
                    try:
                        global_step = trainer.fit(self.tasks[t], t, start_step=self.progress["step"],
                                                  global_step=global_step, resume_state=self.train_state,
                                                  save_checkpoint=save_mid_task)
                    except NonFiniteLoss as e:
                        raise MtilError(f"{e}; {self._nan_advice(t)}") from None
                self.train_state = None
                self.train_seconds.append(round(time.time() - started, 3) if self.method.trains else 0.0)
                self.params.append({"task": self.names[t], **self.method.param_counts()})
                self.progress.update(phase="trained", step=self.cfg.train.iterations, global_step=global_step)
                self.save()
                log.info("task %d/%d %s trained in %.1fs", t + 1, len(self.tasks), self.names[t], time.time() - started)
            if self.eval_mode == "selector":
                self.evaluator.fit_selector(t)
            if self.accelerator.is_main_process:
                row = self.evaluator.row(t + 1)
            else:
                row = None
            row = self._broadcast(row)
            self.rows.append([round(a, 4) for a in row["accuracies"]])
            self.selector_accuracy.append(row["selector_accuracy"])
            self.tracker.row(t, self.names, self.rows)
            log.info("after %s: %s", self.names[t], " ".join(f"{n}={a:.1f}" for n, a in zip(self.names, row["accuracies"])))
            self.progress.update(task=t + 1, phase="train", step=0)
            self.save()
        return self.results()

    def _nan_advice(self, t: int) -> str:
        """What to do after a NaN loss in task t, given the checkpoint the run directory holds."""
        key = self.method.lr_key(self.names[t])
        if not self.dir.checkpoint.exists():
            return f"no task has finished, so there is nothing to resume: lower {key} and run again"
        state = checkpoint.load(self.dir.checkpoint)["progress"]
        if state["task"] == t and state["phase"] == "train" and state["step"] > 0:
            return (f"the last checkpoint is at step {state['step']} of this task and --resume would keep its learning "
                    f"rate; to lower {key}, start again in a new --out")
        return f"tasks before it are kept: lower {key} and continue with --resume (it may change for tasks not started)"

    def _broadcast(self, obj):
        if self.accelerator.num_processes == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def run(cfg: Config, out: str | os.PathLike, resume: bool = False) -> dict:
    """Train and evaluate the configured task sequence (the demo's assets resolved first); returns results.json's
    content."""
    from ..demo.pretrain import resolve_demo_assets
    resolve_demo_assets(cfg)
    return Run(cfg, out, resume).execute()
