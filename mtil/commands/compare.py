"""`mtil compare CONFIG --policies none,freeze,merge,grow --seeds 0,1,2 --out DIR`."""
from __future__ import annotations

from pathlib import Path

from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", default="compare.yaml", help="base config of every cell (default: configs/compare.yaml, the demo stream)")
    p.add_argument("--policies", default="none,freeze,merge,grow", help="comma-separated policy names")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default="runs/compare", help="grid directory (one run directory per policy and seed)")


def execute(args) -> int:
    from .. import policies
    from ..engine.compare import run_grid, summarize_grid
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [n for n in names if n not in policies.POLICIES]
    if unknown or not names:
        raise MtilError(f"unknown policy {', '.join(unknown) or '(none given)'}; registered: {', '.join(sorted(policies.POLICIES))}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise MtilError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    out = Path(args.out)
    cells, reused = run_grid(args.config, args.overrides, names, seeds, out)
    paths = summarize_grid(cells, out)
    print(Path(paths["table_md"]).read_text())
    if reused:
        print(f"reused {len(reused)} finished cell(s) with the same resolved config: "
              f"{', '.join(c.name for c in reused)}")
    print(f"table: {paths['table_md']}\nfigure: {paths['figure']}")
    return 0
