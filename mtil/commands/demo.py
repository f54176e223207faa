"""`mtil demo [--method M] [--policy P] [--out runs/demo] [--set k=v ...] [--resume]`: `mtil run configs/demo.yaml`
offline.

The first call builds the embedded task stream and pre-trains the tiny CLIP into the cache (`MTIL_CACHE`,
default ~/.cache/mtil); later calls reuse them.
"""
from __future__ import annotations

from pathlib import Path

from .. import config
from .common import add_run_options, execute_run


def add_arguments(p) -> None:
    p.add_argument("--method", default=None, help="moe (the adapters, default) or a baseline: zero-shot, finetune, "
                   "lwf, icarl, wiseft, zscl (docs/baselines.md)")
    p.add_argument("--policy", default=None, help="expert lifecycle policy of the moe method (default: the config's, "
                   "merge)")
    p.add_argument("--config", default="demo.yaml", help="demo config (default configs/demo.yaml)")
    add_run_options(p, default_out="runs/demo")


def execute(args) -> int:
    overrides = list(args.overrides) + ["data.demo=true"]
    if args.method:
        overrides.append(f"method.name={args.method}")
    if args.policy:
        overrides.append(f"policy.name={args.policy}")
    out = Path(args.out or "runs/demo")
    cfg = config.load(args.config, overrides)
    return execute_run(cfg, out, args.resume)
