"""Write the notebooks under notebooks/ from the cell sources below (review this file, not the JSON).

    .venv/bin/python scripts/make_notebooks.py          # rewrite notebooks/*.ipynb (no outputs)
    .venv/bin/python scripts/make_notebooks.py --check  # exit 1 when a committed notebook's cells differ from this file

Every notebook reads run directories through the package (`mtil.rundir.load_run`, `mtil.plots`); the run is
`runs/demo` (what `mtil demo` writes) unless `MTIL_RUN_DIR` names another, and the comparison folder is
`runs/compare` (what `mtil compare` writes) unless `MTIL_COMPARE_DIR` does. The committed notebooks are executed
(so a reader on the web sees the figures) against the README's demo run and grid:

    .venv/bin/python scripts/make_notebooks.py --execute --run runs/grid/merge-seed42 --compare runs/grid

`--check` compares the committed cells with this file (not their outputs); CI executes every notebook from scratch
against a fresh demo run (tests/test_notebooks.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

SETUP = '''\
%matplotlib inline
%config InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "dpi": 80}
import os
from pathlib import Path

import numpy as np
from IPython.display import display

from mtil import plots
from mtil.rundir import find_runs, load_run


def locate(path):
    """A relative path is looked up from here and from the repository root (this notebook lives in notebooks/)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    for base in (Path.cwd(), Path.cwd().parent):
        if (base / path).exists():
            return base / path
    return path
'''

LOAD_RUN = '''\
RUN_DIR = locate(os.environ.get("MTIL_RUN_DIR", "runs/demo"))   # `mtil demo` writes runs/demo
run = load_run(RUN_DIR)
print(f"{run.path}: policy {run.policy}, {len(run.matrix)} of {len(run.tasks)} tasks evaluated, "
      f"towers with adapters: {', '.join(run.towers) or 'none recorded'}, {len(run.events)} events")
'''


def fixed_expert_heatmap() -> list:
    return [
        new_markdown_cell("""\
# Fixed experts per encoder block

Every residual block of both CLIP towers carries a mixture-of-experts adapter. During a task the router picks the
top-k experts for each sample, and mtil counts those picks per block. With the `freeze` policy (MoE-Adapters'
activate-freeze), the k most-picked experts of each block are **frozen** at the end of the task: their weights
never change again, so what they learned for that task survives every later task. Later tasks may still route to
a frozen expert — they read it, they do not train it. The `merge` policy freezes the same way and, in between,
periodically averages the two most-used experts into the least-used non-frozen slot.

This notebook reads one run directory (`RUN_DIR`, default `runs/demo`; set `MTIL_RUN_DIR` to read another)."""),
        new_code_cell(SETUP),
        new_code_cell(LOAD_RUN),
        new_markdown_cell("""\
## The heatmap

Rows are the tasks in training order, columns the encoder blocks, one panel per tower; a cell holds the number of
frozen experts in that block after that task. Counts never decrease. What to look for:

* A block whose count rises by the full k at each task picks a *new* set of experts for every task: its features
  are task-specific — the block **specialises**.
* A block whose count rises slowly keeps picking experts that an earlier task already froze: those experts serve
  several tasks, so the block computes features that are **shared** across domains.
* A block that reaches the number of experts has nothing left to train (a merge there is skipped and logged)."""),
        new_code_cell("display(plots.fixed_expert_heatmap(run))"),
        new_code_cell('''\
# the same numbers: experts each task added to the frozen set, per block
for tower in run.towers:
    frozen = run.usage[f"{tower}_frozen"]
    added = np.diff(frozen, axis=0, prepend=0)
    print(f"{tower} tower, blocks {run.usage[f'{tower}_blocks'].tolist()}")
    for name, row in zip(run.tasks, added):
        print(f"  {name:>14}: +{row.tolist()}")
'''),
        new_markdown_cell("""\
## Which experts each task used

One panel per task: for every block (row), the share of that block's top-k picks that went to each expert
(column) while the task trained. A red outline marks an expert frozen at the end of that task — it was among the
most-picked. A block whose picks spread evenly has no clear favourite; a block dominated by one or two experts
routes the task through them."""),
        new_code_cell('''\
for tower in run.towers:
    display(plots.usage_heatmap(run, tower))
'''),
        new_markdown_cell("""\
The `grow` policy freezes nothing; it activates new experts instead. For such a run the heatmap of *active*
experts shows how the capacity grew block by block."""),
        new_code_cell('''\
if run.policy == "grow":
    display(plots.fixed_expert_heatmap(run, value="active"))
else:
    print(f"policy {run.policy}: every expert is active from the start")
'''),
        new_markdown_cell("`mtil plot RUN_DIR` (or `plots.plot_run(RUN_DIR)`) writes all these figures as PNG and SVG "
                          "into `RUN_DIR/figures/`."),
    ]


def router_weights() -> list:
    return [
        new_markdown_cell("""\
# Router weights over training

For each sample, the router of a block gives a weight to each expert (a softmax over the top-k picks). Every
`train.router_snapshot_every` steps mtil records, per block, the mean weight each expert received since the last
snapshot. Plotted over training, these show how the router re-allocates work when the data changes: the DynamicMoE
paper observed that when the input distribution shifts, the weight moves promptly onto newly added experts.

This notebook reads `RUN_DIR` (default `runs/demo`, or `MTIL_RUN_DIR`) and plots layer `LAYER`
(`<tower>.<block>`, default `image.0`, or `MTIL_LAYER`)."""),
        new_code_cell(SETUP),
        new_code_cell(LOAD_RUN + '''\
LAYER = os.environ.get("MTIL_LAYER") or plots.default_layer(run)
print("layers:", ", ".join(run.layers()), "| plotting", LAYER)
'''),
        new_code_cell("display(plots.router_weights(run, LAYER))"),
        new_markdown_cell("""\
## Reading it

Each coloured band is one expert's share of the gate weight (the bands add up to 1); dashed lines are task
boundaries, with the task's name above its span.

* **At a boundary.** With `moe.router: per_task` (MoE-Adapters), every task trains its own router, starting from
  zero, so a jump at the boundary is expected: what matters is which experts the new router settles on, and whether
  they are experts an earlier task froze (reuse) or free ones (new knowledge). With a `shared` router the same
  router re-allocates, and a shift at the boundary is the router reacting to the new data.
* **grow.** New experts become active at each boundary and appear as new bands. If they take a large share soon
  after the boundary, the new distribution is being handed to new capacity — the DynamicMoE pattern.
* **merge.** A merge writes the average of the two most-used experts into the least-used free slot; that slot's band
  may widen after a merge step, as the router learns to use it.
* **freeze.** Frozen experts can keep receiving weight; only their parameters stop changing."""),
        new_code_cell('''\
# the last block of each tower, for contrast with the first
for layer in [f"{t}.{int(run.usage[f'{t}_blocks'][-1])}" for t in run.towers]:
    if layer != LAYER:
        display(plots.router_weights(run, layer))
'''),
        new_code_cell('''\
# mean gate weight per expert during each task, for LAYER
tower, block = LAYER.split(".")
row = [int(b) for b in run.usage[f"{tower}_blocks"]].index(int(block))
weights, steps = run.usage[f"{tower}_router"][:, row], run.usage["router_steps"]
if run.iterations:
    task_of = (steps - 1) // run.iterations
    for k, name in enumerate(run.tasks):
        if (task_of == k).any():
            print(f"{name:>14}: " + " ".join(f"{w:.2f}" for w in weights[task_of == k].mean(axis=0)))
'''),
        new_markdown_cell("""\
## Events

Every freeze, merge (and skipped merge) and grow action, per layer, over the same global steps. Compare the merge
and grow markers of `LAYER` with the bands above."""),
        new_code_cell("display(plots.event_timeline(run))"),
    ]


def compare_policies() -> list:
    return [
        new_markdown_cell("""\
# Comparing methods and expert lifecycle policies

`mtil compare` trains the same task sequence with several methods and seeds: the MoE adapters once per policy
(`none`, `freeze`, `merge`, `grow`) and the field's baselines (`zero-shot`, `finetune`, `lwf`, `icarl`, `wiseft`,
`zscl`: the whole CLIP trains, as ZSCL's code runs them), one run directory per cell
(`runs/compare/<policy>-seed<k>`, `runs/compare/<method>-seed<k>`):

    mtil compare --methods zero-shot,finetune,lwf,icarl,wiseft,zscl,moe --policies freeze,merge,grow --seeds 42,1,2

This notebook reads every run directory under `COMPARE_DIR` (default `runs/compare`, or `MTIL_COMPARE_DIR`), groups
the finished ones by the method (and, for the adapters, the policy) recorded in their `results.json`, and shows
mean ± std over seeds, with what each trains and how long it took.

The metrics (ZSCL definitions, `A[i][j]` = accuracy on dataset j after training task i):
* **Transfer** — mean accuracy on datasets *before* they are learned: how much zero-shot ability survives.
* **Avg** — mean of the whole matrix.
* **Last** — mean of the final row: accuracy on everything after the last task (low Last = forgetting)."""),
        new_code_cell(SETUP),
        new_code_cell('''\
COMPARE_DIR = locate(os.environ.get("MTIL_COMPARE_DIR", "runs/compare"))   # `mtil compare` writes runs/compare
runs = [load_run(d) for d in find_runs(COMPARE_DIR)]
def row_name(r):
    """The grid's row: the policy for the MoE adapters, the method for a baseline."""
    return r.policy if r.method == "moe" else r.method


by_policy = {}
for r in runs:
    if r.complete:
        by_policy.setdefault(row_name(r), []).append(r.results)
    else:
        print(f"unfinished, left out: {r.path} ({len(r.matrix)} of {len(r.tasks)} tasks)")
for name, results in by_policy.items():
    print(f"{name}: seeds {sorted(x['seed'] for x in results)}")
'''),
        new_code_cell("display(plots.compare_policies(by_policy))"),
        new_code_cell('''\
def mean_std(values):
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return f"{v.mean():5.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:4.1f}"


def trainable(r):
    counts = [p.get("trainable") for p in r.get("params") or []]
    return np.mean(counts) if counts and None not in counts else None


print(f"{'row':>10}  seeds  {'Transfer':>12}  {'Avg':>12}  {'Last':>12}  {'Forgetting':>12}  {'trainable':>10}  train s")
for name, results in by_policy.items():
    params = [trainable(r) for r in results]
    seconds = [sum(r["train_seconds"]) for r in results if r.get("train_seconds")]
    print(f"{name:>10}  {len(results):>5}  " + "  ".join(f"{mean_std(r[k] for r in results):>12}"
                                                     for k in ("transfer", "avg", "last", "forgetting"))
          + f"  {np.mean(params) if None not in params else float('nan'):>10.0f}"
          + f"  {np.mean(seconds) if seconds else float('nan'):7.1f}")
'''),
        new_markdown_cell("""\
## Reading it

The left panel shows, for each dataset, the accuracy after the last task: a policy that protects earlier tasks
(`freeze`, `merge`) should hold up on the first datasets of the sequence where plain continual fine-tuning of the
adapters (`none`) or of the whole model (`finetune`) forgets; the distillation baselines (`lwf`, `icarl`, `zscl`)
and the weight averaging ones (`wiseft`, `zscl`) sit in between, and `zero-shot` is the floor of every learned
task and the ceiling Transfer should stay near. The right panel summarises. Error bars are the sample standard deviation over seeds;
differences smaller than them are not evidence. `mtil report COMPARE_DIR` prints the same numbers beside the
published reference rows.

Below, one accuracy matrix per row of the grid (its first seed): the upper triangle is zero-shot transfer to tasks not yet
learned, the diagonal is accuracy right after learning a task, the columns below it show what later tasks did to
it."""),
        new_code_cell('''\
for name in by_policy:
    first = min((r for r in runs if r.complete and row_name(r) == name), key=lambda r: r.results["seed"])
    display(plots.accuracy_matrix(first))
'''),
    ]


BUILDERS = {"fixed_expert_heatmap": fixed_expert_heatmap, "router_weights": router_weights,
            "compare_policies": compare_policies}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=BUILDERS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for n, cell in enumerate(nb.cells):    # stable ids, so regenerating gives the same file
        cell["id"] = f"{name[:20]}-{n}"
    nbformat.validate(nb)
    return nb


def sources(nb) -> list[tuple[str, str]]:
    """What the script defines of a notebook: its cells' types and sources (outputs are the run's, not ours)."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def execute(nb, run_dir: Path, compare_dir: Path) -> None:
    """Run every cell (nbclient, python3 kernel, from notebooks/) against the given run and grid, in place; timing
    metadata dropped so the file holds only the cells and their outputs."""
    import os

    from nbclient import NotebookClient
    env = {"MTIL_RUN_DIR": str(run_dir.resolve()), "MTIL_COMPARE_DIR": str(compare_dir.resolve())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the committed notebooks' cells with this file (outputs are not compared)")
    parser.add_argument("--execute", action="store_true", help="run each notebook and keep its outputs")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="with --execute: the run directory")
    parser.add_argument("--compare", type=Path, default=Path("runs/compare"), help="with --execute: the grid folder")
    parser.add_argument("--out", default=str(NOTEBOOKS), help="folder for the .ipynb files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    stale = []
    for name in BUILDERS:
        path = out / f"{name}.ipynb"
        nb = build(name)
        if args.check:
            if not path.exists() or sources(nbformat.read(path, as_version=4)) != sources(nb):
                stale.append(path)
            continue
        if args.execute:
            execute(nb, args.run, args.compare)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(nbformat.writes(nb) + "\n")
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    if stale:
        print("out of date (run scripts/make_notebooks.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
