"""`mtil run CONFIG [--set k=v ...] --out DIR [--resume]`."""
from __future__ import annotations

from pathlib import Path

from ..errors import MtilError
from .common import add_run_options, execute_run, load_config


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config (path or name under configs/); default: with --resume the "
                   "run directory's config.yaml, else configs/base.yaml with the --set overrides (required then)")
    add_run_options(p)


def execute(args) -> int:
    out = Path(args.out) if args.out else None
    if args.config is None and not args.overrides and not args.resume:
        raise MtilError("give a config to run (e.g. `mtil run mtil_order1 --out runs/o1`; configs/ holds "
                        "mtil_order1, mtil_order2 and their few-shot variants), or try `mtil demo`")
    cfg = load_config(args.config, args.overrides, out, args.resume)
    if out is None:
        out = Path("runs") / (Path(args.config).stem if args.config else "run")
    return execute_run(cfg, out, args.resume)
