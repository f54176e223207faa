"""Figures of the RL study (matplotlib only; no JAX needed), and reading its run directories.

`plot_run(dir)`: learning curve (return, its stage-0 and stage-1 parts, and the fraction of episodes reaching
stage 1 vs environment steps, growth marked) and, from trace.json, Fig. 4 (router weight of each expert of the
first critic MoE block over one greedy episode, the stage drawn under it). For `mtil rl --compare`
(`mtil.rl.compare`): `plot_curves` (Fig. 3 with intervals) and `plot_specialisation` (Fig. 4 as a statistic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MtilError

FORMATS = ("png", "svg")


def _save(fig, out: Path, name: str) -> list[Path]:
    from ..plots.common import save_figures   # matplotlib only when drawing
    return save_figures(fig, out, name, FORMATS, dpi=120)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise MtilError(f"cannot read {path} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MtilError(f"{path} is malformed (not JSON); re-run into a new --out") from None
    if not isinstance(data, dict):
        raise MtilError(f"{path} is malformed (not a JSON object); re-run into a new --out")
    return data


def is_rl_run(path: Path) -> bool:
    f = Path(path) / "results.json"
    if not f.exists():
        return False
    try:
        return json.loads(f.read_text()).get("kind") == "rl"
    except (OSError, ValueError, AttributeError):
        return False


def load(path: Path) -> dict:
    results = read_json(Path(path) / "results.json")
    if results.get("kind") != "rl" or not isinstance(results.get("curve"), list):
        raise MtilError(f"{path} is not a `mtil rl` run directory (results.json lacks kind: rl and a curve)")
    return results


FINAL_KEYS = ("return", "return_stage0", "return_stage1", "reached_stage1", "max_stage", "achievements")


def final_mean(curve: list[dict], key: str, window: int) -> float | None:
    """Mean of `key` over the episodes that finished in the last `window` curve points (each point's value is
    a mean over its `episodes`; None when none finished)."""
    pts = [(p[key], p.get("episodes", 1)) for p in curve[-window:] if p.get(key) is not None]
    weight = sum(n for _, n in pts)
    return float(sum(v * n for v, n in pts) / weight) if weight else None


def finals(curve: list[dict], window: int) -> dict:
    """results.json's final values: {"final_<key>": final_mean} for every FINAL_KEYS key."""
    return {f"final_{k}": final_mean(curve, k, window) for k in FINAL_KEYS}


def series(curve: list[dict], key: str):
    pts = [(r["steps"], r[key]) for r in curve if r.get(key) is not None]
    return (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)) if pts else (None, None)


def plot_run(run_dir, out=None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run_dir = Path(run_dir)
    results = load(run_dir)
    out = Path(out) if out else run_dir / "figures"
    files = []
    fig, axes = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    panels = ((axes[0], "return", "episode return"), (axes[0], "return_stage0", "earned in stage 0"),
              (axes[0], "return_stage1", "earned in stage 1"), (axes[1], "reached_stage1", "reaching stage 1"))
    for c, (ax, key, name) in enumerate(panels):
        x, y = series(results["curve"], key)
        if x is not None:
            ax.plot(x, y, color=f"C{c}", label=name, lw=1.5 if key == "return" else 1.0)
    for ax in axes:
        for g in results.get("grow_at", []):
            ax.axvline(g * results["steps_per_iteration"], color="k", ls="--", lw=0.8)
    axes[0].set_ylabel("return per episode")
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    axes[1].set_ylabel("episodes reaching stage 1")
    axes[0].set_title(f"{results['label']} (seed {results['seed']}, {results['env']})")
    axes[1].set_xlabel("environment steps")
    files += _save(fig, out, "learning_curve")
    trace_file = run_dir / "trace.json"
    if trace_file.exists():
        files += plot_trace(read_json(trace_file), results, out)
    return files


def plot_trace(trace: dict, results: dict, out: Path) -> list[Path]:
    """Fig. 4: router weights over one greedy episode with the stage under it."""
    import matplotlib.pyplot as plt
    if not trace.get("stage"):
        return []
    stage = np.array(trace["stage"])
    t = np.arange(len(stage))
    router = np.array(trace["router"]) if trace.get("router") else None
    fig, (ax, ax_s) = plt.subplots(2, 1, figsize=(7, 4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if router is not None and router.ndim == 2 and router.shape[1]:
        for e in range(router.shape[1]):
            ax.plot(t, router[:, e], label=f"expert {e}", color=f"C{e}")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        ax.text(0.5, 0.5, "no MoE block (dense network)", ha="center", va="center", transform=ax.transAxes)
    switch = np.flatnonzero(np.diff(stage) != 0)
    for s in switch:
        ax.axvline(s + 1, color="k", ls="--", lw=0.8)
    ax.set_ylabel(f"router weight\n({trace.get('layer') or 'n/a'})")
    ax.set_title(f"{results['label']} seed {results['seed']}: greedy episode {trace.get('episode')} "
                 f"(return {trace.get('return', 0):.0f})")
    ax_s.step(t, stage, where="post", color="k")
    ax_s.set_yticks(sorted(set(stage.tolist()) | {0, 1}))
    ax_s.set_ylabel("stage")
    ax_s.set_xlabel("step in episode")
    return _save(fig, out, "router_trace")


def find_runs(paths) -> list[tuple[Path, dict]]:
    """(run directory, results) of every `mtil rl` run given or under the given folders."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise MtilError(f"{p} does not exist; give run directories of `mtil rl` or folders holding them")
        dirs = [p] if (p / "results.json").exists() else sorted(d.parent for d in p.rglob("results.json"))
        found += [(d, load(d)) for d in dirs if is_rl_run(d)]
    if not found:
        raise MtilError(f"no `mtil rl` run directories under {', '.join(map(str, paths))}")
    return found


CURVES = (("return", "episode return"), ("return_stage0", "return earned in stage 0"),
          ("return_stage1", "return earned in stage 1"), ("reached_stage1", "episodes reaching stage 1"))


def plot_curves(bands: dict[str, dict], grow_steps: list[int], out: Path, title: str) -> list[Path]:
    """Fig. 3 with per-stage returns: {label: {key: (steps, mean, lo, hi), "n": seeds}} drawn as mean lines with
    interval bands, one panel per CURVES key; dashed lines at the growth steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (key, name) in zip(axes.flat, CURVES):
        for c, (label, series) in enumerate(bands.items()):
            if series.get(key) is None:
                continue
            x, mean, lo, hi = series[key]
            ax.plot(x, mean, color=f"C{c}", label=f"{label} (n={series['n']})")
            if lo is not None:
                ax.fill_between(x, lo, hi, color=f"C{c}", alpha=0.2, lw=0)
        for g in grow_steps:
            ax.axvline(g, color="k", ls="--", lw=0.8)
        ax.set_ylabel(name)
    for ax in axes[1]:
        ax.set_xlabel("environment steps")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, "learning_curves")


def plot_switch(bands: dict[str, dict], diffs: dict[str, tuple], switch: int, out: Path, title: str) -> list[Path]:
    """The switch study's figure: the return of every variant around the stage switch (top) and each variant's
    return minus the 1-expert (continued) run's, paired by seed (bottom); the switch dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    colours = {label: f"C{c}" for c, label in enumerate(bands)}
    for label, series in bands.items():
        if series.get("return") is None:
            continue
        x, mean, lo, hi = series["return"]
        top.plot(x, mean, color=colours[label], label=f"{label} (n={series['n']})")
        if lo is not None:
            top.fill_between(x, lo, hi, color=colours[label], alpha=0.2, lw=0)
    for label, (x, mean, lo, hi) in diffs.items():
        bottom.plot(x, mean, color=colours[label], label=f"{label} − 1 expert")
        if lo is not None:
            bottom.fill_between(x, lo, hi, color=colours[label], alpha=0.2, lw=0)
    bottom.axhline(0, color="k", lw=0.6)
    for ax in (top, bottom):
        ax.axvline(switch, color="k", ls="--", lw=0.8)
    top.set_ylabel("return per episode")
    bottom.set_ylabel("return minus 1 expert\n(paired by seed)")
    bottom.set_xlabel("environment steps (dashed: switch from Breakout to SpaceInvaders)")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, "switch")


def plot_specialisation(groups: list[dict], out: Path, title: str) -> list[Path]:
    """Fig. 4 as a statistic: per MoE block, the stage specialisation (JS, bits) of each variant's trained
    routers and of re-drawn random routers, bars at the mean with interval whiskers. Nothing without a
    variant of >= 2 experts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = [(g["label"], kind, g["specialisation"][b][kind], b) for g in groups for b in g["specialisation"]
            for kind in ("js", "random_js") if g["specialisation"][b][kind]]
    if not bars:
        return []
    blocks = sorted({b for *_, b in bars})
    order = [g["label"] for g in groups]
    series = sorted({(label, kind) for label, kind, _, _ in bars},
                    key=lambda s: (order.index(s[0]), s[1] == "random_js"))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(blocks)), 4))
    for i, (label, kind) in enumerate(series):
        cells = [(j, cell) for j, b in enumerate(blocks) for lab, k, cell, b2 in bars
                 if (lab, k, b2) == (label, kind, b)]
        xs = [j + (i - (len(series) - 1) / 2) * width for j, _ in cells]
        means = np.array([c["mean"] for _, c in cells])
        lo = np.array([c["mean"] if c["lo"] is None else c["lo"] for _, c in cells])
        hi = np.array([c["mean"] if c["hi"] is None else c["hi"] for _, c in cells])
        colour = f"C{order.index(label)}"
        name = f"{label}, " + ("trained router" if kind == "js" else "random router (control)")
        ax.bar(xs, means, width, yerr=[means - lo, hi - means], capsize=3, edgecolor=colour, label=name,
               color=colour if kind == "js" else "white", hatch=None if kind == "js" else "//")
    ax.set_xticks(range(len(blocks)), blocks)
    ax.set_ylabel("JS divergence, stage 0 vs stage 1\nmean router distributions (bits)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, out, "specialisation")
