"""`mtil run CONFIG [--set k=v ...] --out DIR [--resume]`."""
from __future__ import annotations

from pathlib import Path

from .. import config
from ..errors import MtilError


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config (path or name under configs/); default: with --resume the "
                   "run directory's config.yaml, else configs/base.yaml with the --set overrides (required then)")
    add_common(p)


def add_common(p) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def load_config(path, overrides, out: Path | None, resume: bool):
    """The given config; else, when resuming, the run's own config.yaml; else the schema defaults."""
    if path is None and resume and out is not None and (out / "config.yaml").exists():
        path = out / "config.yaml"
    return config.load(path, overrides)


def summary_lines(results: dict, out: Path) -> list[str]:
    names = results["tasks"]
    width = max(len(n) for n in names)
    lines = [f"accuracy matrix (%), row i = after training task i, column j = dataset j ({out / 'results.json'})",
             " " * (width + 2) + " ".join(f"{n[:7]:>7}" for n in names)]
    for name, row in zip(names, results["matrix"]):
        lines.append(f"{name:>{width}}  " + " ".join(f"{a:7.1f}" for a in row))
    if results.get("complete"):
        lines.append(f"Transfer {results['transfer']:.2f}  Avg {results['avg']:.2f}  Last {results['last']:.2f}  "
                     f"BWT {results['bwt']:.2f}")
    if results.get("selector_accuracy_mean") is not None:
        lines.append(f"task selector accuracy {results['selector_accuracy_mean']:.1f}%")
    return lines


def execute_run(cfg, out: Path, resume: bool) -> int:
    from ..demo.pretrain import resolve_demo_assets
    from ..engine.run import Run
    resolve_demo_assets(cfg)   # the demo's cached data and backbone, before the run exists
    created = not out.exists()
    try:
        run = Run(cfg, out, resume)
        results = run.execute()
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()   # a run that failed before writing anything leaves no empty directory behind
        raise
    if run.accelerator.is_main_process:
        print("\n".join(summary_lines(results, out)))
        if cfg.output.plots:
            from ..plots import plot_run
            paths = plot_run(out)
            print(f"figures: {out / 'figures'} ({len(paths)} files)")
    return 0


def execute(args) -> int:
    out = Path(args.out) if args.out else None
    if args.config is None and not args.overrides and not args.resume:
        raise MtilError("give a config to run (e.g. `mtil run mtil_order1 --out runs/o1`; configs/ holds "
                        "mtil_order1, mtil_order2 and their few-shot variants), or try `mtil demo`")
    cfg = load_config(args.config, args.overrides, out, args.resume)
    if out is None:
        out = Path("runs") / (Path(args.config).stem if args.config else "run")
    return execute_run(cfg, out, args.resume)
