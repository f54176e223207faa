"""`mtil plasticity [CONFIG]`: the DynamicMoE plasticity study (seed 000, Section 3.1).

Trains every selected expansion method on the chunked continual stream and writes, into --out, the
training-accuracy figure (PNG + SVG), table.md, results.json and one file per finished (method, seed) under
runs/. Rerunning into the same --out skips finished (method, seed) runs. `--params` prints the
parameter-matching table and trains nothing.
"""
from __future__ import annotations

import argparse
import os

from ..errors import MtilError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="study config (default: plasticity/demo.yaml, offline, 6.9 CPU-minutes per seed measured; "
                             "plasticity/relabel.yaml: the second design, 7.2 CPU-minutes per seed measured for its 8 arms)")
    parser.add_argument("--out", default="runs/plasticity",
                        help="output directory; finished (method, seed) runs in it are reused (default: %(default)s)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of methods (default: study.methods)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: study.seeds)")
    parser.add_argument("--params", action="store_true",
                        help="print the active-parameter matching table of the config and exit without training")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def execute(args) -> int:
    from ..plasticity import methods as registry
    from ..plasticity import study

    cfg = study.load_config(args.config, args.overrides)
    methods = registry.check(_split(args.methods)) if args.methods is not None else list(cfg.study.methods)
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in _split(args.seeds)]
        except ValueError:
            raise MtilError(f"--seeds must be comma-separated integers like 0,1,2, got '{args.seeds}'") from None
    if args.params:
        print(study.params_markdown(study.param_rows(cfg, methods), cfg.study.chunks))
        return 0
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise MtilError(f"--out '{args.out}' is a file, not a folder; choose another --out")
    result = study.run_study(cfg, args.out, methods, seeds)
    print(result.table)
    if result.skipped:
        print(f"reused {len(result.skipped)} finished run(s) from {args.out}/runs")
    print("wrote: " + ", ".join(str(p) for p in result.files))
    return 0
