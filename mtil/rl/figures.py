"""Figures and table of the RL study (matplotlib only; no JAX needed).

`plot_run(dir)`: learning curve (return and stage reached vs environment steps, growth marked) and, from
trace.json, Fig. 4 (router weight of each expert of the first critic MoE block over one greedy episode, the
stage drawn under it). `compare(dirs, out)`: Fig. 3 (mean +- std over seeds per variant) and table.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MtilError
from ..metrics import fmt_mean_std, mean_std
from ..rundir.files import write_text

FORMATS = ("png", "svg")


def _read_json(path: Path) -> dict:
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
    results = _read_json(Path(path) / "results.json")
    if results.get("kind") != "rl" or not isinstance(results.get("curve"), list):
        raise MtilError(f"{path} is not a `mtil rl` run directory (results.json lacks kind: rl and a curve)")
    return results


def _save(fig, out: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        tmp = out / f".{name}.tmp.{fmt}"
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=fmt)
        tmp.replace(path)
        files.append(path)
    plt.close(fig)
    return files


def _series(curve: list[dict], key: str):
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
    for ax, key, name in ((axes[0], "return", "episode return"), (axes[1], "max_stage", "stage reached")):
        x, y = _series(results["curve"], key)
        if x is not None:
            ax.plot(x, y, color="C0")
        for g in results.get("grow_at", []):
            ax.axvline(g * results["steps_per_iteration"], color="k", ls="--", lw=0.8)
        ax.set_ylabel(name)
    axes[0].set_title(f"{results['label']} (seed {results['seed']}, {results['env']})")
    axes[1].set_xlabel("environment steps")
    files += _save(fig, out, "learning_curve")
    trace_file = run_dir / "trace.json"
    if trace_file.exists():
        files += plot_trace(_read_json(trace_file), results, out)
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


def _runs(paths) -> list[tuple[Path, dict]]:
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise MtilError(f"{p} does not exist; give run directories of `mtil rl` or folders holding them")
        dirs = [p] if (p / "results.json").exists() else sorted(d.parent for d in p.rglob("results.json"))
        found += [(d, load(d)) for d in dirs if is_rl_run(d)]
    if not found:
        raise MtilError(f"no `mtil rl` run directories under {', '.join(map(str, paths))}")
    return found


def _shift_cell(shifts) -> str:
    shifts = [s for s in shifts if s is not None]
    if not shifts:
        return "n/a"
    a, b = np.array(shifts).T
    return f"{a.mean():.2f} -> {b.mean():.2f} ({len(shifts)})"


def _final(results: dict, key: str):
    """Mean of `key` over the run's last `final_window` curve points."""
    vals = [r[key] for r in results["curve"] if r.get(key) is not None][-int(results.get("final_window", 10)):]
    return float(np.mean(vals)) if vals else None


def router_shift(run_dir: Path):
    """(mean weight of the newest expert in stage 0, in stage 1) over the traced greedy episode, or None when
    the trace has no MoE router, fewer than 2 experts or only one stage."""
    f = Path(run_dir) / "trace.json"
    if not f.exists():
        return None
    trace = _read_json(f)
    router, stage = np.array(trace.get("router") or []), np.array(trace.get("stage") or [])
    if router.ndim != 2 or router.shape[1] < 2 or len(set(stage.tolist())) < 2:
        return None
    return float(router[stage == 0, -1].mean()), float(router[stage >= 1, -1].mean())


def compare(paths, out) -> tuple[str, list[Path]]:
    """Fig. 3 (mean +- std over seeds of each variant) and a markdown table, written into `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out)
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for d, r in _runs(paths):
        groups.setdefault(r["label"], []).append((d, r))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lines = ["| variant | seeds | final return (mean ± std) | episodes reaching stage 1 (final) | achievements (final) "
             "| newest expert's router weight, stage 0 -> 1 (greedy episode; seeds) |", "|---|---|---|---|---|---|"]
    for c, (name, runs) in enumerate(groups.items()):
        for ax, key in zip(axes, ("return", "max_stage")):
            series = [_series(r["curve"], key) for _, r in runs]
            series = [s for s in series if s[0] is not None]
            if not series:
                continue
            grid = series[0][0]
            ys = np.array([np.interp(grid, x, y) for x, y in series])
            mean, std = mean_std(ys)
            ax.plot(grid, mean, color=f"C{c}", label=f"{name} (n={len(series)})")
            ax.fill_between(grid, mean - std, mean + std, color=f"C{c}", alpha=0.2)
        finals, stages, ach = (np.array([v for v in (_final(r, k) for _, r in runs) if v is not None], float)
                               for k in ("return", "max_stage", "achievements"))
        incomplete = sum(not r.get("complete") for _, r in runs)
        lines.append(f"| {name} | {len(runs)}{f' ({incomplete} incomplete)' if incomplete else ''} | "
                     + " | ".join(fmt_mean_std(v, digits=2) for v in (finals, stages, ach)) + " | "
                     + _shift_cell([router_shift(d) for d, _ in runs]) + " |")
    grow = sorted({g * r["steps_per_iteration"] for rs in groups.values() for _, r in rs for g in r["grow_at"]})
    for ax, name in zip(axes, ("episode return", "stage reached (fraction of episodes in stage 1)")):
        for g in grow:
            ax.axvline(g, color="k", ls="--", lw=0.8)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    fig.suptitle("PPO with MoE-SimBa blocks: mean ± std over seeds (dashed: growth)")
    files = _save(fig, out, "learning_curves")
    table = "\n".join(lines)
    files.append(write_text(out / "table.md", table + "\n"))
    return table, files
