"""`mtil report RUN_DIR [RUN_DIR ...] [--format md|csv|json]`."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    p.add_argument("--format", default="md", choices=["md", "csv", "json"], help="output format (default md)")


def execute(args) -> int:
    from ..report import render
    print(render(args.runs, args.format))
    return 0
