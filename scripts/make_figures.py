"""Draw the README's figures from a demo run and a compare grid into docs/figures/ (PNG, small).

    .venv/bin/python scripts/make_figures.py --compare runs/grid              # the run: runs/grid/merge-seed42
    .venv/bin/python scripts/make_figures.py --demo runs/demo --compare runs/grid --out docs/figures

The run (`--demo`, default: the grid's `merge-seed42` cell, which is the default `mtil demo`) gives the fixed-expert
heatmap, the router weights over training, the accuracy matrix and its TensorBoard curves (`plots.training_curves`,
from RUN/tensorboard: needs the tensorboard package); the grid (`mtil compare --methods ... --out DIR`)
gives the comparison figure (`mtil.plots.compare_policies`, as `mtil compare` draws it). The study pages' figures
come from their own commands (docs/plasticity.md, docs/rl.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("fixed_experts", "router_weights", "accuracy_matrix", "training_curves", "compare")
DPI = 100
ROWS = ("zero-shot", "finetune", "lwf", "icarl", "wiseft", "zscl", "none", "freeze", "merge", "grow")   # the grid's order


def make_figures(demo: Path, compare: Path, out: Path) -> list[Path]:
    from mtil import plots, report
    from mtil.rundir import find_runs, load_run

    run = load_run(demo)
    figures = {"fixed_experts": plots.fixed_expert_heatmap(run),
               "router_weights": plots.router_weights(run, plots.default_layer(run) or plots.DEFAULT_LAYER),
               "accuracy_matrix": plots.accuracy_matrix(run),
               "training_curves": plots.training_curves(run),
               "compare": plots.compare_policies({g.label: g.runs for g in sorted(
                   report.group_runs(find_runs(compare)), key=lambda g: ROWS.index(g.label) if g.label in ROWS else len(ROWS))})}
    return [plots.save_figure(fig, out / f"{name}.png", "png", dpi=DPI) for name, fig in figures.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", required=True, type=Path, help="the --out of `mtil compare`")
    parser.add_argument("--demo", type=Path, default=None, help="a run directory (default: COMPARE/merge-seed42)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    from mtil.errors import MtilError
    try:
        written = make_figures(args.demo or args.compare / "merge-seed42", args.compare, args.out)
    except MtilError as e:
        print(f"make_figures: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
