"""What a study config costs: seconds per training update of every method at its first and last chunk (random
inputs of the config's shape, the config's batch, optimizer and scaler, CPU time of this process), projected to
the config's steps (chunks x steps_per_chunk per run; the plasticity gap adds one fresh copy per gap chunk).

    python -m mtil.plasticity.cost [CONFIG] [--steps N] [--set key=value ...]   (prints markdown)
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from ..errors import MtilError, exit_status
from . import methods as registry
from . import study


def seconds_per_step(cfg, name: str, chunk: int, steps: int, device: torch.device) -> float:
    """Mean CPU seconds of one update of method `name` grown to `chunk` (after 2 warm-up updates)."""
    torch.manual_seed(0)
    model = study.fresh_copy(cfg, name, 0, chunk, cfg.data.image_size, device)
    learner = study.Learner(model, cfg.train, device)
    bs, size = cfg.train.batch_size, cfg.data.image_size
    x = torch.randn(bs, cfg.data.channels, size, size, device=device)
    y = torch.randint(0, cfg.data.num_classes, (bs,), device=device)
    for i in range(steps + 2):
        if i == 2:
            start = time.process_time()
        learner.step(x, y, cfg.train.lr)
    return (time.process_time() - start) / steps


def cost_rows(cfg, steps: int) -> list[dict]:
    device = study.resolve_device(cfg.train.device)
    chunks, per_chunk = cfg.study.chunks, cfg.study.steps_per_chunk
    gap_chunks = [c for c in range(1, chunks + 1) if study.gap_at(cfg.diagnostics, c)]
    rows = []
    for name in cfg.study.methods:
        first, last = seconds_per_step(cfg, name, 1, steps, device), seconds_per_step(cfg, name, chunks, steps, device)
        per = [first + (last - first) * (c - 1) / max(chunks - 1, 1) for c in range(1, chunks + 1)]  # linear in c
        run = per_chunk * (sum(per) + sum(per[c - 1] for c in gap_chunks))
        rows.append({"label": registry.label(name), "first": first, "last": last, "run_s": run})
    return rows


def cost_markdown(rows: list[dict], cfg) -> str:
    lines = ["| method | s / update @ chunk 1 | s / update @ last chunk | one run (h) |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['first']:.3f} | {r['last']:.3f} | {r['run_s'] / 3600:.2f} |")
    total = sum(r["run_s"] for r in rows) * len(cfg.study.seeds)
    lines.append(f"\nAll {len(rows)} methods x {len(cfg.study.seeds)} seed(s): {total / 3600:.1f} h of one core "
                 f"({cfg.study.chunks} chunks x {cfg.study.steps_per_chunk:,} steps, batch {cfg.train.batch_size}, "
                 f"plasticity gap every {cfg.diagnostics.gap_every or 'never'} chunk(s); seconds per update "
                 f"interpolated linearly between the first and the last chunk).")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtil.plasticity.cost", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--steps", type=int, default=5, help="timed updates per method and chunk (default: 5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    def action():
        cfg = study.load_config(args.config, args.overrides)
        if cfg.data.image_size is None:
            raise MtilError("data.image_size is null; set it to time the config")
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        print(cost_markdown(cost_rows(cfg, args.steps), cfg), end="")
    return exit_status(action)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
