"""`compare_policies`, the figure of `mtil compare`: per-dataset Last and Transfer / Avg / Last per policy, mean ± std
over seeds (`metrics.mean_std`)."""
from __future__ import annotations

import logging
import math

import numpy as np
from matplotlib.figure import Figure

from ..errors import MtilError
from ..metrics import mean_std
from .common import expert_colours, fmt_value, mark_panel, new_figure

log = logging.getLogger(__name__)


def _seed_mean_std(values: list) -> tuple[float, float]:
    """`metrics.mean_std` over the values that exist (None and NaN left out); (nan, 0) when none does."""
    present = [x for x in values if x is not None and not math.isnan(x)]
    return mean_std(present) if present else (math.nan, 0.0)


def compare_policies(results_by_policy: dict[str, list[dict]]) -> Figure:
    """Left: Last_j (final-row accuracy on each dataset) per policy; right: Transfer / Avg / Last. Mean ± std
    (sample std, ddof=1) over the seeds, i.e. the finished results.json contents given per policy."""
    groups = {}
    for policy, runs in results_by_policy.items():
        finished = [r for r in runs if r.get("complete")]
        if len(finished) < len(runs):
            log.info("compare: %d unfinished run(s) of policy %s left out", len(runs) - len(finished), policy)
        if finished:
            groups[policy] = finished
    if not groups:
        raise MtilError("no finished runs to compare; finish them with `mtil run ... --resume` or `mtil compare`")
    tasks = next(iter(groups.values()))[0]["tasks"]
    for policy, runs in groups.items():
        for r in runs:
            if r["tasks"] != tasks:
                raise MtilError(f"runs learn different task sequences ({', '.join(tasks)} vs "
                                f"{', '.join(r['tasks'])}, policy {policy}); compare runs of one sequence")
    names = list(groups)
    colours = expert_colours(len(names))
    width = 0.8 / len(names)
    per_task = min(max(1, len(names) / 2), 2.5)    # wider groups for more bars, up to a page's width
    fig = new_figure(max(8.0, 3.5 + 0.55 * len(tasks) * per_task + 1.2 * per_task), 4.3)
    grid = fig.add_gridspec(1, 2, width_ratios=[max(len(tasks), 3), 3 * min(per_task, 1.6)])
    ax_tasks = mark_panel(fig.add_subplot(grid[0]), "per-dataset")
    ax_summary = mark_panel(fig.add_subplot(grid[1]), "summary")
    for n, policy in enumerate(names):
        runs = groups[policy]
        stats = [_seed_mean_std([r["matrix"][-1][j] for r in runs]) for j in range(len(tasks))]
        offset = (n - (len(names) - 1) / 2) * width
        label = f"{policy} (n={len(runs)})"
        ax_tasks.bar(np.arange(len(tasks)) + offset, [m for m, _ in stats], width, yerr=[s for _, s in stats],
                     color=colours[n], label=label, capsize=2, error_kw={"linewidth": 0.8})
        summary = [_seed_mean_std([r.get(k) for r in runs]) for k in ("transfer", "avg", "last")]
        ax_summary.bar(np.arange(3) + offset, [m for m, _ in summary], width, yerr=[s for _, s in summary],
                       color=colours[n], capsize=2, error_kw={"linewidth": 0.8})
        for k, (m, s) in enumerate(summary):
            if not math.isnan(m):
                ax_summary.text(k + offset, m + s + 1.5, fmt_value(m), ha="center", va="bottom", rotation=90,
                                fontsize=7)
    ax_tasks.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right", rotation_mode="anchor")
    ax_tasks.set_ylabel("Last accuracy (%) — final row")
    ax_tasks.set_title("accuracy on each dataset after the last task", fontsize=10)
    ax_summary.set_xticks(range(3), ["Transfer", "Avg", "Last"])
    ax_summary.set_title("MTIL metrics", fontsize=10)
    for ax in (ax_tasks, ax_summary):
        ax.set_ylim(0, 118)
        ax.grid(axis="y", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    fig.suptitle("Methods and policies compared (mean ± std over seeds)", fontsize=11)
    fig.legend(loc="outside lower center", fontsize=8.5, frameon=False, ncols=min(len(names), 6))
    return fig


def paired_differences(pairs: list[dict], metrics: tuple = ("transfer", "avg", "last", "forgetting"),
                       title: str | None = None) -> Figure:
    """Paired differences A - B (`report.paired_differences` results), one panel per metric: each pair a row, its
    per-seed differences as dots, their mean with the bootstrap interval as a bar; zero marked."""
    if not pairs:
        raise MtilError("no paired differences to draw; give --paired A B")
    names = {"transfer": "Transfer", "avg": "Avg", "last": "Last", "bwt": "BWT", "forgetting": "Forgetting"}
    fig = new_figure(3.0 * len(metrics) + 1.5, 1.2 + 0.45 * len(pairs))
    axes = [mark_panel(fig.add_subplot(1, len(metrics), i + 1), names.get(m, m)) for i, m in enumerate(metrics)]
    y = np.arange(len(pairs))[::-1]
    for ax, metric in zip(axes, metrics):
        for row, p in zip(y, pairs):
            r = next(r for r in p["rows"] if r["metric"] == metric)
            if r["diff_mean"] is None:
                continue
            diffs = [d for d in r["diffs"] if d is not None]
            ax.plot(diffs, [row] * len(diffs), "o", color="0.6", markersize=3, zorder=2)
            ax.errorbar([r["diff_mean"]], [row], xerr=[[r["diff_mean"] - r["ci_low"]], [r["ci_high"] - r["diff_mean"]]],
                        fmt="D", color="C0", markersize=5, capsize=3, zorder=3)
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.set_title(f"{names.get(metric, metric)} difference (points)", fontsize=9)
        ax.set_yticks(y, [f"{p['a']} - {p['b']}" for p in pairs] if ax is axes[0] else [""] * len(pairs),
                      fontsize=8)
        ax.grid(axis="x", color="0.9", linewidth=0.8)
    p0 = pairs[0]
    fig.suptitle(title or f"Paired differences by seed: mean with {p0['confidence'] * 100:g}% bootstrap interval "
                          f"(diamond), each seed (dots)", fontsize=10)
    return fig
