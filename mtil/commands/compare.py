"""`mtil compare CONFIG --methods zero-shot,finetune,lwf,icarl,wiseft,zscl,moe --policies none,freeze,merge,grow
--seeds 0,1,2 --out DIR`."""
from __future__ import annotations

from pathlib import Path

from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", default="compare.yaml", help="base config of every cell (default: configs/compare.yaml, the demo stream)")
    p.add_argument("--methods", default="moe", help="comma-separated methods: moe (the MoE adapters, once per --policies "
                   "entry) and the baselines zero-shot, finetune, lwf, icarl, wiseft, zscl (default: moe)")
    p.add_argument("--policies", default="none,freeze,merge,grow", help="comma-separated policies of the moe method")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default="runs/compare", help="grid directory (one run directory per method or policy and "
                   "seed: <policy>-seed<k> for moe, <method>-seed<k> for the others)")


def names(text: str, registry, kind: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in registry]
    if unknown or not chosen:
        raise MtilError(f"unknown {kind} {', '.join(unknown) or '(none given)'}; registered: {', '.join(sorted(registry))}")
    return chosen


def execute(args) -> int:
    from .. import methods, policies
    from ..engine.compare import run_grid, summarize_grid
    chosen = names(args.methods, methods.METHODS, "method")
    grid_policies = names(args.policies, policies.POLICIES, "policy") if "moe" in chosen else []
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise MtilError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    out = Path(args.out)
    cells, reused = run_grid(args.config, args.overrides, grid_policies, seeds, out, methods=chosen)
    paths = summarize_grid(cells, out)
    print(Path(paths["table_md"]).read_text())
    if reused:
        print(f"reused {len(reused)} finished cell(s) with the same resolved config: "
              f"{', '.join(c.name for c in reused)}")
    print(f"table: {paths['table_md']}\nfigure: {paths['figure']}")
    return 0
