"""The preflight (`mtil check`): will this config, this prepared data and this device carry the run, how long will
it take and how much memory will it need, found out in minutes and without writing a run.

`preflight(cfg)` reads every dataset of `data.order` (prepared files, row counts and class list against what
`mtil prepare` recorded, the class list against the registry's, a decoded batch of each split, labels inside the
class list), builds the model on the run's device, trains `steps` + 1 steps of the first task (the first one is not
timed) and runs one capped evaluation row (`eval_images` test images of the first task). Every problem found is one
line in `Preflight.problems`, all of them in one pass; the timing runs when the model and the first dataset load.

The projection is a linear cost model on what was measured (`Costs`). Training: a step of the first task splits
into a text part (its classes x the measured forward and backward pass of one prompt through the text tower, at
most the whole step) and an image part (the rest); another task's step is the image part plus its classes x the
per-class share of the text part (every class prompt goes through the text tower in every step), so a task with
few classes never projects below the image part; a task takes `train.iterations` steps (+1 with
`train.final_step`). Evaluation, per dataset j (position i of T): once, its frozen image features (test images and,
with the task selector, up to `selector.max_fit_samples` training images) and its zero-shot text features; then in
each of the T - i + 1 rows after it is learned its test images through the adapted image tower and its prompts
(classes x templates) through the adapted text tower (`task-free` and `whole-model` evaluation: in all T rows).
Peak memory: the peak of the measured steps plus, per class, what one prompt's training pass holds (CUDA: the
allocator's peak; CPU: the process's peak resident memory, one figure for the whole check, not per task).
"""
from __future__ import annotations

import dataclasses
import logging
import resource
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import methods
from ..data import pipeline, prepared, registry
from ..errors import MtilError
from ..model import backbone as backbone_mod
from .evaluate import Evaluator
from .selector import UNSEEN
from .train import Trainer, TrainSettings

log = logging.getLogger(__name__)


@dataclass
class TaskPlan:
    name: str
    train: int | None = None        # images
    test: int | None = None         # images (after data.max_eval_per_dataset)
    classes: int | None = None
    templates: int | None = None
    train_s: float | None = None    # projected
    eval_s: float | None = None     # projected
    peak_mb: float | None = None    # projected (CUDA) / measured process peak (CPU)


@dataclass
class Costs:
    """What was measured on the first task (seconds; MiB)."""
    step_s: float                   # one training step of the first task
    classes: int                    # its classes
    prompt_train_s: float           # forward + backward of one prompt through the text tower
    prompt_eval_s: float            # forward of one prompt through the adapted text tower
    image_eval_s: float             # one test image through the adapted image tower
    image_frozen_s: float           # one image through the frozen image tower
    peak_mb: float                  # peak memory of the measured steps
    prompt_mb: float | None         # memory one prompt's training pass holds (CUDA only)
    steps: int                      # timed steps
    eval_row_s: float               # the capped evaluation row, as run (not projected)


@dataclass
class Preflight:
    device: str
    model: str
    weights: str
    tasks: list[TaskPlan]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    costs: Costs | None = None
    memory: str = ""                # what peak_mb measures
    clock: str = "wall"             # what the times are (CLOCKS)

    @property
    def ok(self) -> bool:
        return not self.problems

    def total(self, key: str) -> float | None:
        values = [getattr(t, key) for t in self.tasks]
        return None if any(v is None for v in values) else sum(values)


def _decode_check(task: pipeline.TaskData, transform, bad_images: str, n: int) -> list[str]:
    """Decode the first n images of each split through `transform`; labels inside the class list."""
    problems = []
    for split in ("train", "test"):
        ds = getattr(task, split)
        if len(ds) == 0:
            problems.append(f"{task.name}: its {split} split is empty; prepare it again with `mtil prepare {task.name}`")
            continue
        labels = np.asarray(ds["label"])
        if labels.min() < 0 or labels.max() >= len(task.classnames):
            problems.append(f"{task.name}: {split} labels run from {labels.min()} to {labels.max()} but it has "
                            f"{len(task.classnames)} classes; prepare it again")
        for i in range(min(n, len(ds))):
            try:
                img = pipeline.decode(ds[i], task.name, split, i, bad_images)
                if isinstance(img, pipeline.Undecodable):
                    continue
                transform(img)
            except MtilError as e:
                problems.append(f"{task.name}: {e}")
                break
    return problems


def check_datasets(cfg, transform=None, decode: int = 4) -> tuple[dict, list[str]]:
    """({name: TaskData} of the datasets that load, one line per problem) over `data.order`."""
    tasks, problems = {}, []
    for name in cfg.data.order:
        try:
            task = pipeline.load_task(cfg.data, name, cfg.seed)
        except MtilError as e:
            problems.append(f"{name}: {e}")
            continue
        except Exception as e:   # a file the datasets library cannot read at all
            problems.append(f"{name}: cannot read the prepared dataset under {cfg.data.root} ({type(e).__name__}); "
                            f"prepare it again with {prepared.prepare_command(name, cfg.data.root, overwrite=True)}")
            continue
        stored = list(task.train.features["label"].names)   # the class list the prepared files carry
        if registry.is_registered(name):
            expected = registry.get(name).classnames
            if list(expected) != stored:
                first = next((i for i, (a, b) in enumerate(zip(expected, stored)) if a != b),
                             min(len(expected), len(stored)))
                seen = stored[first] if first < len(stored) else "(none)"
                want = expected[first] if first < len(expected) else "(none)"
                problems.append(f"{name}: its class list is not the registry's ({len(stored)} classes, "
                                f"{len(expected)} expected; label {first} is {seen!r}, expected {want!r}); prepare "
                                f"it again with {prepared.prepare_command(name, cfg.data.root, overwrite=True)}")
        if transform is not None:
            problems += _decode_check(task, transform, cfg.data.bad_images, decode)
        tasks[name] = task
    return tasks, problems


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}   # cpu: this process's CPU time (a shared machine)
_clock = time.perf_counter


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = _clock()
    fn()
    _sync(device)
    return _clock() - t0


def measure(cfg, bb, method, adapted, accelerator, tasks: list, steps: int, eval_images: int,
            prompts: int) -> Costs:
    """Train steps + 1 steps of tasks[0] and run one capped evaluation row; the per-prompt and per-image costs."""
    device = accelerator.device
    first = tasks[0]
    settings = dataclasses.replace(TrainSettings.from_config(cfg), iterations=steps + 1, final_step=False,
                                   checkpoint_every=0, log_every=0, warmup_steps=min(cfg.train.warmup_steps, steps))
    stamps = []
    after = method.after_step

    def stamped(ctx):
        after(ctx)
        _sync(device)
        stamps.append(_clock())

    method.after_step = stamped
    _reset_peak(device)
    try:
        if method.trains:
            trainer = Trainer(settings, accelerator=accelerator, model=accelerator.prepare_model(method.module),
                              method=method, transform=bb.preprocess_train, tokenizer=bb.tokenizer)
            trainer.fit(first, 0)
    finally:
        method.after_step = after
    step_s = statistics.median(np.diff(stamps)) if len(stamps) > 1 else 0.0
    peak = _peak_mb(device)
    tokens = bb.tokenizer([p for per in first.prompts(all_templates=True) for p in per][:prompts]).to(device)
    n = len(tokens)
    prompt_mb = None
    prompt_train_s = 0.0
    if method.trains:
        _reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

        def text_pass():
            with accelerator.autocast():
                out = adapted.encode_text(tokens, route=0)
            grads = [p for p in adapted.parameters() if p.requires_grad]
            if grads and out.requires_grad:
                torch.autograd.grad(out.float().sum(), grads, allow_unused=True)

        prompt_train_s = _timed(text_pass, device) / n
        if device.type == "cuda":
            prompt_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20 / n
    adapted.eval()
    with torch.no_grad():
        prompt_eval_s = _timed(lambda: adapted.encode_text(tokens, route=0), device) / n
        images = torch.stack([bb.preprocess_val(pipeline.decode(first.test[i], first.name, "test", i, "fail"))
                              for i in range(min(eval_images, len(first.test), cfg.eval.batch_size))]).to(device)
        image_eval_s = _timed(lambda: adapted.encode_image(images, route=0), device) / len(images)
        image_frozen_s = _timed(lambda: adapted.encode_image(images, route=UNSEEN), device) / len(images)
    capped = dataclasses.replace(first, test=first.test.select(range(min(eval_images, len(first.test)))))
    evaluator = Evaluator(adapted, [capped], bb.preprocess_val, bb.tokenizer, eval_cfg=cfg.eval,
                          selector_cfg=cfg.selector, data_cfg=cfg.data, seed=cfg.seed,
                          shared_router=cfg.moe.router == "shared", device=device, autocast=accelerator.autocast,
                          mode=method.eval_mode(cfg.eval.mode))

    def row():
        if evaluator.mode == "selector":
            evaluator.fit_selector(0)
        evaluator.row(1)

    eval_row_s = _timed(row, device)
    return Costs(step_s=float(step_s), classes=len(first.classnames), prompt_train_s=prompt_train_s,
                 prompt_eval_s=prompt_eval_s, image_eval_s=image_eval_s, image_frozen_s=image_frozen_s,
                 peak_mb=peak, prompt_mb=prompt_mb, steps=max(len(stamps) - 1, 0), eval_row_s=eval_row_s)


def project(cfg, plans: list[TaskPlan], costs: Costs, eval_mode: str, trains: bool, cuda: bool) -> None:
    """Fill each plan's projected train / eval time and peak memory (the module docstring's cost model)."""
    T = len(plans)
    per_step = cfg.train.iterations + int(cfg.train.final_step)
    # the first task's step = an image part + its classes' prompts; the prompt part is the measured per-prompt cost
    # times its classes, at most the whole step (a per-prompt cost timed on few prompts overstates a batched step's)
    text_s = min(costs.step_s, costs.classes * costs.prompt_train_s)
    image_s = costs.step_s - text_s
    per_class = text_s / max(costs.classes, 1)
    for i, plan in enumerate(plans, start=1):
        extra = plan.classes - costs.classes
        plan.train_s = per_step * (image_s + plan.classes * per_class) if trains else 0.0
        prompts = plan.classes * plan.templates
        fit = min(plan.train, cfg.selector.max_fit_samples) if eval_mode == "selector" else 0
        once = (plan.test + fit) * costs.image_frozen_s + prompts * costs.prompt_eval_s
        rows = T if eval_mode in ("task-free", "whole-model") else 0 if eval_mode == "zero-shot" else T - i + 1
        plan.eval_s = once + rows * (plan.test * costs.image_eval_s + prompts * costs.prompt_eval_s)
        plan.peak_mb = (costs.peak_mb + extra * costs.prompt_mb if cuda and costs.prompt_mb is not None
                        else costs.peak_mb)


def preflight(cfg, steps: int = 3, eval_images: int = 32, prompts: int = 32, decode: int = 4,
              clock: str = "wall") -> Preflight:
    """Check everything a run of `cfg` needs and project its cost (see the module docstring) in `clock` seconds
    (wall, or this process's CPU time: what a one-thread run costs on a machine shared with other jobs); writes
    nothing."""
    global _clock
    from accelerate import Accelerator

    if clock not in CLOCKS:
        raise MtilError(f"the preflight's clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    _clock = CLOCKS[clock]
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)   # as the run would (for the rest of the process)
    accelerator = Accelerator(mixed_precision="no" if cfg.model.precision == "fp32" else cfg.model.precision)
    device = accelerator.device
    problems, notes = [], []
    bb = None
    weights = "random initialisation" if cfg.model.pretrained in (None, "") else str(cfg.model.pretrained)
    try:
        bb = backbone_mod.load(cfg.model.name, cfg.model.pretrained, device=device, activation=cfg.model.activation)
    except MtilError as e:
        problems.append(f"model: {e}")
        if cfg.model.pretrained not in (None, "") and not str(e).startswith("unknown model"):
            try:
                bb = backbone_mod.load(cfg.model.name, None, device=device)
                weights = "random initialisation (the configured weights did not load)"
            except MtilError:
                bb = None
    if cfg.model.pretrained in (None, "") or weights.startswith("random"):
        notes.append("timed with random weights: the same architecture and cost as the pretrained model; "
                     "accuracies mean nothing")
    found, data_problems = check_datasets(cfg, bb.preprocess_train if bb else None, decode)
    problems += data_problems
    plans = []
    for name in cfg.data.order:
        t = found.get(name)
        plans.append(TaskPlan(name) if t is None else TaskPlan(
            name, len(t.train), len(t.test), len(t.classnames), len(t.templates)))
    out = Preflight(str(device), cfg.model.name, weights, plans, problems, notes, clock=clock,
                    memory="CUDA allocator peak" if device.type == "cuda" else "process peak resident memory")
    try:
        method = methods.build(cfg)
    except MtilError as e:
        problems.append(f"method: {e}")
        return out
    if bb is None or cfg.data.order[0] not in found:
        notes.append("not timed: " + ("the model did not build" if bb is None else
                                      f"the first dataset ({cfg.data.order[0]}) did not load"))
        return out
    tasks = [found[n] for n in cfg.data.order if n in found]
    try:
        adapted = method.attach(bb, accelerator, tasks, fresh=True)
        out.costs = measure(cfg, bb, method, adapted, accelerator, tasks, steps, eval_images, prompts)
    except MtilError as e:
        problems.append(f"training or evaluating the first task: {e}")
        return out
    except torch.cuda.OutOfMemoryError:
        problems.append(f"out of memory on {device} in a training step of {cfg.data.order[0]}; lower "
                        "train.batch_size or use model.precision=bf16")
        return out
    if len(found) == len(cfg.data.order):
        project(cfg, plans, out.costs, method.eval_mode(cfg.eval.mode), method.trains, device.type == "cuda")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
        worst = max(p.peak_mb for p in plans if p.peak_mb is not None) if out.costs else None
        if worst is not None and worst > 0.95 * total:
            problems.append(f"projected peak memory {worst:.0f} MiB exceeds this device's {total:.0f} MiB; lower "
                            "train.batch_size or use model.precision=bf16")
    return out
