"""`mtil report RUN_DIR [RUN_DIR ...] [--format md|csv|json] [--paired A B [--figure FILE]]`."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    p.add_argument("--format", default="md", choices=["md", "csv", "json"], help="output format (default md)")
    p.add_argument("--paired", nargs=2, metavar=("A", "B"), default=None,
                   help="per-seed differences A - B of two groups, named as the table labels them (e.g. merge "
                        "freeze), with a bootstrap interval (configs/report.yaml) for every metric")
    p.add_argument("--figure", default=None, metavar="FILE",
                   help="with --paired: also draw the paired differences into FILE (.png or .svg)")


def execute(args) -> int:
    from ..errors import MtilError
    from ..report import render, render_paired
    if args.paired is None:
        if args.figure:
            raise MtilError("--figure draws paired differences; give --paired A B too")
        print(render(args.runs, args.format))
        return 0
    text, paired = render_paired(args.runs, *args.paired, args.format)
    print(text)
    if args.figure:
        from ..plots import paired_differences
        from ..plots.common import save_figure
        save_figure(paired_differences([paired]), args.figure)
        print(f"figure: {args.figure}")
    return 0
