"""`mtil plot RUN_DIR [--out DIR] [--formats png,svg] [--layer image.0]`: the figures of one run directory."""
from __future__ import annotations

from pathlib import Path

from ..rundir.layout import RunDir


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run directory (the --out of `mtil run` or `mtil demo`)")
    p.add_argument("--out", default=None, help="folder for the figures (default RUN_DIR/figures)")
    p.add_argument("--formats", default="png,svg", help="comma-separated file formats (default png,svg)")
    p.add_argument("--layer", default=None, help="adapter layer of the router-weights figure, <tower>.<block> "
                   "(default image.0, or the run's first layer)")


def execute(args) -> int:
    from ..rl.figures import is_rl_run
    if is_rl_run(Path(args.run_dir)):  # `mtil rl` run: learning curve and Fig. 4 (router trace)
        from ..rl.figures import plot_run
        written = plot_run(args.run_dir, args.out)
        print(f"wrote {len(written)} files:\n" + "\n".join(f"  {p}" for p in written))
        return 0
    from ..plots import write_run_figures
    written, skipped = write_run_figures(Path(args.run_dir), args.out, args.formats, args.layer)
    folder = Path(args.out) if args.out else RunDir(args.run_dir).figures
    names = sorted({p.stem for p in written}, key=lambda n: [p.stem for p in written].index(n))
    print(f"wrote {len(written)} files ({len(names)} figures) to {folder}:")
    for path in written:
        print(f"  {path}")
    for name, reason in skipped.items():
        print(f"  skipped {name}: {reason}")
    return 0
