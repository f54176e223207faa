"""Figures of a run directory, and the policy comparison figure of `mtil compare`.

Every function returns a `matplotlib.figure.Figure` built directly (an Agg canvas attached, no pyplot, no global
matplotlib state touched), so the library is safe to call from servers, tests and notebooks alike:

  fixed_expert_heatmap(run)        frozen ("fixed") experts per encoder block after each task, one panel per tower
  usage_heatmap(run, tower)        each task's share of top-k selections per block x expert, one panel per task
  accuracy_matrix(run)             A[i][j] with values; Transfer / Avg / Last in the title when the run is complete
  router_weights(run, layer)       mean gate weight per expert of one layer over training, task boundaries marked
  event_timeline(run)              merge / grow / freeze events over global steps, one row per layer
  training_curves(run)             the TensorBoard curves (loss, lr, expert entropy, events, accuracy rows), still
  compare_policies(by_policy)      per-dataset Last and Transfer / Avg / Last, mean ± std over seeds, per policy
  paired_differences(pairs)        per-seed differences of paired groups with bootstrap intervals (report --paired)

`plot_run(run_dir)` writes the run figures into RUN_DIR/figures (atomically), skipping, with a log line, those the
run has no data for. `run` arguments accept a `RunRecord` or a run directory path.

Modules: `experts` (the first two), `matrix`, `router`, `events`, `curves`, `compare`, `write` (all figures of a run into a
folder) and `common` (what they share: `MissingData`, panels, heatmaps, task boundaries, `save_figure`).
"""
from .common import PANEL, MissingData, panel_axes, save_figure
from .compare import compare_policies, paired_differences
from .curves import training_curves
from .events import ACTION_STYLE, event_timeline
from .experts import fixed_expert_heatmap, usage_heatmap
from .matrix import accuracy_matrix
from .router import DEFAULT_LAYER, default_layer, router_weights
from .write import FIGURES, plot_run, write_run_figures

__all__ = [
    "ACTION_STYLE", "DEFAULT_LAYER", "FIGURES", "PANEL", "MissingData", "accuracy_matrix", "compare_policies",
    "default_layer", "event_timeline", "fixed_expert_heatmap", "paired_differences", "panel_axes", "plot_run",
    "router_weights", "save_figure", "training_curves", "usage_heatmap", "write_run_figures",
]
