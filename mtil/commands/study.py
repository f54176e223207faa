"""`mtil study merge [CONFIG] --out DIR [--seeds 0,1] [--arms ...] [--settings ...] [--name NAME] [--plan]
[--summary-only]`: the merge study (mtil.studies.merge; docs/merge_study.md). Re-running it into the same --out
continues it."""
from __future__ import annotations

from pathlib import Path

from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("study", choices=["merge"], help="which study (merge: freeze vs merge and its controls)")
    p.add_argument("config", nargs="?", default=None, help="study config (default: merge_study/demo.yaml)")
    p.add_argument("--out", default="runs/merge_study", help="study folder: one run directory per setting, arm "
                   "and seed; finished ones are reused (default: %(default)s)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the study's; an arm cut to fewer "
                   "seeds by study.arm_seeds keeps its own among them)")
    p.add_argument("--arms", default=None, help="comma-separated arms (default: all)")
    p.add_argument("--settings", default=None, help="comma-separated settings (default: all)")
    p.add_argument("--name", default="study", help="summary files OUT/NAME.json, .md, _<setting>.png (default: "
                   "%(default)s; e.g. pilot)")
    p.add_argument("--plan", action="store_true", help="list the cells and what each would do, run nothing")
    p.add_argument("--summary-only", action="store_true", help="summarise the finished cells, run nothing (the "
                   "unfinished ones are named in the summary)")


def _split(text):
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def execute(args) -> int:
    from ..studies import merge
    cfg = merge.load_config(args.config)
    try:
        seeds = None if args.seeds is None else [int(s) for s in _split(args.seeds)]
    except ValueError:
        raise MtilError(f"--seeds must be comma-separated integers like 0,1, got {args.seeds!r}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MtilError(f"--out {out} is a file, not a folder; choose another --out")
    if args.plan:
        cells = merge.plan(cfg, out, args.overrides, seeds, _split(args.arms), _split(args.settings))
        for c in cells:
            print(f"{c.status:8s} {c.setting}/{c.arm}-seed{c.seed}")
        print(f"{len(cells)} cells, {sum(c.status != 'done' for c in cells)} to run")
        return 0
    summary, paths = merge.run_study(cfg, out, args.overrides, seeds, _split(args.arms), _split(args.settings),
                                     args.name, summary_only=args.summary_only)
    print(merge.markdown(summary))
    print("wrote: " + ", ".join(map(str, paths)))
    return 0
