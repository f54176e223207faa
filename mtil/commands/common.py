"""What `mtil run` and `mtil demo` share: their options, the config they resolve, the run and its summary."""
from __future__ import annotations

import os
from pathlib import Path

from .. import config
from ..rundir.layout import RunDir


def add_run_options(p, default_out: str = "runs/<config name>") -> None:
    p.add_argument("--out", default=None, help=f"run directory (default {default_out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def load_config(path, overrides, out: Path | None, resume: bool):
    """The given config; else, when resuming, the run's own config.yaml; else the schema defaults."""
    if path is None and resume and out is not None and os.path.isfile(RunDir(out).config):
        path = RunDir(out).config
    return config.load(path, overrides)


def summary_lines(results: dict, out: Path) -> list[str]:
    names = results["tasks"]
    width = max(len(n) for n in names)
    lines = [f"accuracy matrix (%), row i = after training task i, column j = dataset j ({RunDir(out).results})",
             " " * (width + 2) + " ".join(f"{n[:7]:>7}" for n in names)]
    for name, row in zip(names, results["matrix"]):
        lines.append(f"{name:>{width}}  " + " ".join(f"{a:7.1f}" for a in row))
    if results.get("selector_accuracy_mean") is not None:
        lines.append(f"task selector accuracy {results['selector_accuracy_mean']:.1f}%")
    return lines


def final_line(results: dict, out: Path, figures: int | None) -> str:
    """The last line of a run's console: Transfer / Avg / Last and where the results, figures and curves are."""
    paths = RunDir(out)
    head = (f"Transfer {results['transfer']:.2f}  Avg {results['avg']:.2f}  Last {results['last']:.2f}  "
            f"BWT {results['bwt']:.2f}" if results.get("complete") else
            f"{len(results['matrix'])} of {len(results['tasks'])} tasks")
    where = [f"results {paths.results}"]
    if figures is not None:
        where.append(f"figures {paths.figures} ({figures} files)")
    if paths.tensorboard.is_dir():
        where.append(f"curves: tensorboard --logdir {paths.tensorboard}")
    return " | ".join([head, *where])


def execute_run(cfg, out: Path, resume: bool) -> int:
    from ..demo.pretrain import resolve_demo_assets
    from ..engine.run import Run
    resolve_demo_assets(cfg)   # the demo's cached data and backbone, before the run exists
    run = Run(cfg, out, resume)   # a run that fails before writing anything leaves no directory behind (its claim)
    results = run.execute()
    if run.accelerator.is_main_process:
        print("\n".join(summary_lines(results, out)))
        figures = None
        if cfg.output.plots:
            from ..plots import plot_run
            figures = len(plot_run(out))
        print(final_line(results, out, figures))
    return 0
