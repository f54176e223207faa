"""`mtil status RUN_DIR`: how far a run is (running, interrupted or finished) and its partial matrix, read without
touching its lock."""
from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run directory (the --out of `mtil run` or `mtil demo`), running or not")


def execute(args) -> int:
    from ..engine.status import run_status, status_lines
    from .common import final_line, summary_lines
    status = run_status(args.run_dir)
    lines = status_lines(status)
    if status["matrix"]:
        lines += summary_lines(status["results"], Path(args.run_dir))
    if status["complete"]:
        lines.append(final_line(status["results"], Path(args.run_dir), None))
    print("\n".join(lines))
    return 0
