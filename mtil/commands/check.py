"""`mtil check CONFIG [--set k=v ...]`: the preflight of a run (`mtil.engine.preflight`): every problem found in one
pass, one line each, and a table of projected training and evaluation time and peak memory per task on this
device. Writes no run directory."""
from __future__ import annotations

from .. import config
from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("config", help="YAML config (path or name under configs/), as given to `mtil run`")
    p.add_argument("--steps", type=int, default=3, help="timed training steps of the first task (default 3; one "
                   "more, untimed, runs first)")
    p.add_argument("--eval-images", type=int, default=32, help="test images of the capped evaluation (default 32)")
    p.add_argument("--prompts", type=int, default=32, help="prompts timed through the text tower (default 32)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="times in wall seconds (default) or in "
                   "this process's CPU seconds (a one-thread run on a machine shared with other jobs)")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _count(v) -> str:
    return "-" if v is None else str(v)


def render(result) -> list[str]:
    lines = [f"mtil check: {result.model} ({result.weights}) on {result.device}; times in {result.clock} seconds"]
    lines += [f"note: {n}" for n in result.notes]
    lines += ["", "| task | train images | test images | classes | train time | eval time | peak MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for t in result.tasks:
        lines.append(f"| {t.name} | {_count(t.train)} | {_count(t.test)} | {_count(t.classes)} | "
                     f"{_duration(t.train_s)} | {_duration(t.eval_s)} | "
                     f"{'-' if t.peak_mb is None else f'{t.peak_mb:.0f}'} |")
    peaks = [t.peak_mb for t in result.tasks if t.peak_mb is not None]
    lines.append(f"| total | {_count(result.total('train'))} | "
                 f"{_count(result.total('test'))} | {_count(result.total('classes'))} | "
                 f"{_duration(result.total('train_s'))} | {_duration(result.total('eval_s'))} | "
                 f"{f'{max(peaks):.0f}' if peaks else '-'} |")
    c = result.costs
    if c is not None:
        both = (result.total("train_s") or 0) + (result.total("eval_s") or 0)
        lines += ["", f"projected run: {_duration(both)}; measured: a step of the first task {c.step_s:.3f} s "
                  f"(median of {c.steps}), a prompt's training pass {c.prompt_train_s * 1e3:.1f} ms, a prompt "
                  f"{c.prompt_eval_s * 1e3:.1f} ms and a test image {c.image_eval_s * 1e3:.1f} ms (frozen "
                  f"{c.image_frozen_s * 1e3:.1f} ms) in evaluation, the capped evaluation row {c.eval_row_s:.1f} s; "
                  f"peak memory: {result.memory}"]
    lines += [f"problem: {p}" for p in result.problems]
    return lines


def execute(args) -> int:
    from ..demo.pretrain import resolve_demo_assets
    from ..engine.preflight import preflight
    cfg = config.load(args.config, args.overrides)
    resolve_demo_assets(cfg)   # the demo's cached data and backbone (built once into the cache)
    result = preflight(cfg, steps=args.steps, eval_images=args.eval_images, prompts=args.prompts,
                       clock=args.clock)
    print("\n".join(render(result)))
    if not result.ok:
        raise MtilError(f"{len(result.problems)} problem(s) found (listed above); fix them and run `mtil check` again")
    return 0
