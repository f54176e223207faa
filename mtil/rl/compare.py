"""`mtil rl --compare`: the study's tables, intervals and figures from run directories (no JAX needed).

Runs are grouped by variant (label) within one environment; a group counts its distinct seeds. Refused with
one line: runs of more than one environment, a seed that appears twice in a group, and runs whose settings
differ other than by seed and variant (budget, environment, network width, ...). Intervals are percentile
bootstrap 95% intervals (mtil.stats.interval) of the mean over seeds; a
difference of two variants resamples each variant's seeds independently, except grow − 1 expert, taken per seed
(the grow run of a seed is its 1-expert run until the growth). Writes table.md, compare.json,
learning_curves.{png,svg} (Fig. 3 with per-stage returns) and specialisation.{png,svg} (Fig. 4 as a statistic).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from ..config import flatten
from ..errors import MtilError
from ..rundir.files import write_json, write_text
from ..stats import CONFIDENCE, RESAMPLES, bootstrap_mean, interval
from . import figures

# (key, column name): the final values over the episodes of each run's last `final_window` curve points
# (recomputed from the curve, figures.finals)
FINALS = (("final_return", "final return"), ("final_return_stage0", "stage-0 return"),
          ("final_return_stage1", "stage-1 return"), ("final_reached_stage1", "episodes reaching stage 1"))
# runs with a stage switch by step (env.switch_step) add: the return of the last `final_window` curve points
# before the switch (stage 0), of the first `final_window` after it (the start of stage 1), the mean return over
# every episode after it (weighted by episodes, so the many short early episodes weigh most) and the mean of the
# curve points after it (each point's return weighing as much as the next: the area under stage 1's learning
# curve per training step)
SWITCH_FINALS = (("before_switch_return", "stage-0 return before the switch"),
                 ("early_switch_return", "return over the first window of stage 1"),
                 ("after_switch_return", "mean return over stage 1"),
                 ("area_switch_return", "stage-1 curve mean (area per step)"))
# config keys a comparison may vary besides the seed: the variant, and bookkeeping that does not act on training
VARIANT_KEYS = ("label", "net.block", "moe.", "train.reset_at_switch")
BOOKKEEPING = ("seed", "train.checkpoint_every", "train.keep_snapshots", "trace.", "specialisation.")
ORDER = ("no_moe", "1_expert", "k_experts", "grow", "grow_zero", "fresh")  # row and colour order of the variants
# differences reported (variant minus variant, paired by seed?), when both groups are present. The grow run of a
# seed is its 1-expert run until the growth, so that difference is taken per seed, as are those of the switch
# study's arms (grow with a zero-output expert, fresh network), which share the 1-expert run's state (or, for the
# fresh network, its seed's environments) up to the switch; the others share no state and resample each
# variant's seeds independently. The last is the capacity gap.
DIFFERENCES = (("grow", "1_expert", True), ("grow_zero", "1_expert", True), ("fresh", "1_expert", True),
               ("grow", "no_moe", False), ("grow", "k_experts", False), ("no_moe", "1_expert", False))


def fmt(cell: dict | None, digits: int = 2) -> str:
    if cell is None or cell["mean"] is None or (isinstance(cell["mean"], float) and math.isnan(cell["mean"])):
        return "n/a"
    text = f"{cell['mean']:.{digits}f}"
    return text if cell["lo"] is None else f"{text} [{cell['lo']:.{digits}f}, {cell['hi']:.{digits}f}]"


# ------------------------------------------------------------------------------------------ runs and checks
def _config(run: Path) -> dict:
    f = run / "config.yaml"
    try:
        return flatten(yaml.safe_load(f.read_text()) or {}) if f.exists() else {}
    except (OSError, yaml.YAMLError):
        raise MtilError(f"{f} is malformed (not YAML); re-run into a new --out") from None


def _differing(configs: dict[Path, dict], ignore) -> list[str]:
    def keep(k):
        return not any(k == i or (i.endswith(".") and k.startswith(i)) for i in ignore)
    keys = {k for c in configs.values() for k in c if keep(k)}
    return sorted(k for k in keys if len({json.dumps(c.get(k)) for c in configs.values() if c}) > 1)


def group_runs(paths) -> tuple[str, dict[str, list[tuple[Path, dict]]]]:
    """(environment, {label: [(run dir, results)] sorted by seed}), after the checks of the module docstring."""
    runs = figures.find_runs(paths)
    envs = sorted({r["env"] for _, r in runs})
    if len(envs) > 1:
        counts = ", ".join(f"{e} x{sum(r['env'] == e for _, r in runs)}" for e in envs)
        raise MtilError(f"--compare: the runs are of {len(envs)} environments ({counts}); compare one "
                        f"environment at a time")
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for d, r in sorted(runs, key=lambda run: (ORDER.index(run[1].get("variant")) if run[1].get("variant") in ORDER
                                              else len(ORDER), run[1]["label"])):
        groups.setdefault(r["label"], []).append((d, r))
    configs = {d: _config(d) for d, _ in runs}
    for name, members in groups.items():
        seen: dict[int, Path] = {}
        for d, r in members:
            if r["seed"] in seen:
                raise MtilError(f"--compare: seed {r['seed']} of '{name}' appears twice ({seen[r['seed']]}, {d}); "
                                f"give each seed once")
            seen[r["seed"]] = d
        members.sort(key=lambda m: m[1]["seed"])
        differ = _differing({d: configs[d] for d, _ in members}, BOOKKEEPING)
        if differ:
            raise MtilError(f"--compare: the '{name}' runs differ in {', '.join(differ[:4])}; compare runs of "
                            f"one setting")
    differ = _differing(configs, BOOKKEEPING + VARIANT_KEYS)
    if differ:
        raise MtilError(f"--compare: the variants were run with different settings ({', '.join(differ[:4])} "
                        f"differ); compare runs of one setting")
    return envs[0], groups


def _specialisation(run: Path) -> dict | None:
    f = run / "specialisation.json"
    return figures.read_json(f) if f.exists() else None


# ------------------------------------------------------------------------------------------ the comparison
def summarise(groups: dict[str, list[tuple[Path, dict]]]) -> dict:
    """Every number of the comparison: per group the final values and the specialisation statistic with
    intervals over seeds, and the differences between variants."""
    switched = any(r.get("switch_at") is not None for m in groups.values() for _, r in m)
    keys = FINALS + (SWITCH_FINALS if switched else ())
    out = {"groups": [], "differences": [], "keys": [list(k) for k in keys],
           "bootstrap": {"method": "percentile", "resamples": RESAMPLES, "confidence": CONFIDENCE}}
    finals_of = {}
    for name, members in groups.items():
        g = {"label": name, "variant": members[0][1].get("variant"), "seeds": [r["seed"] for _, r in members],
             "incomplete": sum(not r.get("complete") for _, r in members), "final": {}, "specialisation": {},
             "inputs": {}}
        final = [{**figures.finals(r["curve"], int(r.get("final_window", 10))), **switch_finals(r)}
                 for _, r in members]
        finals_of[name] = {}
        for key, _ in keys:   # seed -> value (a group's seeds are distinct: group_runs refuses repeats)
            per_seed = {r["seed"]: f[key] for (_, r), f in zip(members, final) if f[key] is not None}
            vals = list(per_seed.values())
            g["final"][key] = {**interval(vals), "values": vals} if vals else None
            finals_of[name][key] = per_seed
        onsets = [stage1_onset(r["curve"]) for _, r in members]
        reached = [o for o in onsets if o is not None]
        g["stage1_onset"] = {**interval(reached), "values": onsets} if reached else None
        specs = [s for s in (_specialisation(d) for d, _ in members) if s]
        for block in sorted({b for s in specs for b, row in s["blocks"].items() if row["experts"] >= 2}):
            rows = [s["blocks"][block] for s in specs if block in s["blocks"]]
            trained = [row["js"] for row in rows if row.get("js") is not None]
            random = [float(np.mean(row["random_js"])) for row in rows if row.get("random_js")]
            newest = [row["newest"] for row in rows if row.get("newest") is not None]
            g["specialisation"][block] = {
                "js": {**interval(trained), "values": trained} if trained else None,
                "random_js": {**interval(random), "values": random} if random else None,
                "newest": np.mean(newest, axis=0).tolist() if newest else None}
        for key in ("obs_rms_unclipped", "obs_rms", "clipped_fraction"):
            per_stage = np.array([[np.nan if v is None else v for v in s[key]] for s in specs if key in s])
            g["inputs"][key] = (None if not len(per_stage) else
                                [None if np.isnan(col).all() else float(np.nanmean(col)) for col in per_stage.T])
        if specs:
            g["inputs"]["greedy_reaching_stage1"] = float(np.mean([s["reaching_stage1"] / s["episodes"]
                                                                   for s in specs if s["episodes"]]))
        out["groups"].append(g)
    by_variant = {g["variant"]: g["label"] for g in out["groups"] if g["variant"]}
    for a, b, paired in DIFFERENCES:
        if a in by_variant and b in by_variant:
            la, lb = by_variant[a], by_variant[b]
            row = {"a": la, "b": lb, "paired": paired}
            for key, _ in keys:
                va, vb = finals_of[la][key], finals_of[lb][key]
                common = sorted(set(va) & set(vb))
                if paired:
                    row[key] = interval([va[s] - vb[s] for s in common]) if common else None
                else:
                    row[key] = interval(list(va.values()), list(vb.values())) if va and vb else None
            out["differences"].append(row)
    out["growth"] = [growth(groups[g["label"]], groups.get(by_variant.get("1_expert"), []))
                     for g in out["groups"] if g["variant"] in ("grow", "grow_zero")]
    return out


def switch_finals(results: dict) -> dict:
    """SWITCH_FINALS of a run with a stage switch by step (None without one)."""
    s = results.get("switch_at")
    if s is None:
        return {k: None for k, _ in SWITCH_FINALS}
    window = int(results.get("final_window", 10))
    before = [p for p in results["curve"] if p["iteration"] <= s]
    after = [p for p in results["curve"] if p["iteration"] > s]
    points = [p["return"] for p in after if p.get("return") is not None]
    return {"before_switch_return": figures.final_mean(before, "return", window),
            "early_switch_return": figures.final_mean(after[:window], "return", window) if after else None,
            "after_switch_return": figures.final_mean(after, "return", len(after)) if after else None,
            "area_switch_return": float(np.mean(points)) if points else None}


def growth(grow_runs, one_expert_runs, points: int = 5) -> dict:
    """What the first growth did: the newest expert's rollout router weight per block at the first curve point
    after it and at the end (mean over seeds), and the return of the `points` curve points after it minus the
    1-expert run's at the same points (per seed; the two runs are one run until the growth)."""
    label = grow_runs[0][1]["label"]
    one = {r["seed"]: r["curve"] for _, r in one_expert_runs}
    after, end, dips = {}, {}, []
    for _, r in grow_runs:
        if not r["grow_at"]:
            continue
        post = [p for p in r["curve"] if p["iteration"] > r["grow_at"][0]]
        if not post:
            continue
        for block, w in post[0]["router"].items():
            after.setdefault(block, []).append(w[-1])
            end.setdefault(block, []).append(post[-1]["router"][block][-1])
        if r["seed"] in one:
            mine = {p["iteration"]: p.get("return") for p in post[:points]}
            theirs = {p["iteration"]: p.get("return") for p in one[r["seed"]]}
            pairs = [(v, theirs[i]) for i, v in mine.items() if v is not None and theirs.get(i) is not None]
            if pairs:
                dips.append(float(np.mean([a - b for a, b in pairs])))
    return {"label": label, "points": points,
            "newest_after": {b: float(np.mean(v)) for b, v in after.items()},
            "newest_end": {b: float(np.mean(end[b])) for b in after},
            "return_vs_1_expert": {**interval(dips), "values": dips} if dips else None}


def stage1_onset(curve: list[dict], share: float = 0.5):
    """Environment steps of the first curve point at which `share` of the finished episodes reached stage 1."""
    return next((p["steps"] for p in curve if (p.get("reached_stage1") or 0) >= share), None)


def _onset_cell(cell: dict | None) -> str:
    if cell is None:
        return "never"
    millions = {k: None if cell[k] is None else cell[k] / 1e6 for k in ("mean", "lo", "hi")}
    return f"{fmt(millions)}M ({sum(v is not None for v in cell['values'])})"


def table(env: str, summary: dict) -> str:
    keys = [tuple(k) for k in summary.get("keys", FINALS)]
    ci = f"mean [{round(CONFIDENCE * 100)}% bootstrap interval] over seeds"
    lines = [f"Environment: {env}. Final values: mean over the episodes that finished in each run's last "
             f"`train.final_window` curve points; {ci}.", "",
             "| variant | seeds | " + " | ".join(name for _, name in keys) + " | steps until half the episodes "
             "reach stage 1 (runs) |", "|---|---|" + "---|" * (len(keys) + 1)]
    for g in summary["groups"]:
        seeds = f"{len(g['seeds'])}" + (f" ({g['incomplete']} incomplete)" if g["incomplete"] else "")
        lines.append(f"| {g['label']} | {seeds} | " + " | ".join(fmt(g["final"][k]) for k, _ in keys)
                     + f" | {_onset_cell(g['stage1_onset'])} |")
    if summary["differences"]:
        lines += ["", "| difference | " + " | ".join(name for _, name in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for d in summary["differences"]:
            pairing = " (paired by seed)" if d["paired"] else ""
            lines.append(f"| {d['a']} − {d['b']}{pairing} | " + " | ".join(fmt(d[k]) for k, _ in keys) + " |")
    spec = [(g, b, row) for g in summary["groups"] for b, row in g["specialisation"].items()]
    if spec:
        lines += ["", "Router specialisation: Jensen-Shannon divergence (bits) between the stage-0 and stage-1 mean "
                  "router distributions over greedy episodes; random router: same weights, routers re-drawn.", "",
                  "| variant | MoE block | JS, trained router | JS, random router | newest expert's weight, "
                  "stage 0 -> 1 |", "|---|---|---|---|---|"]
        for g, block, row in spec:
            newest = "n/a" if row["newest"] is None else f"{row['newest'][0]:.2f} -> {row['newest'][1]:.2f}"
            lines.append(f"| {g['label']} | {block} | {fmt(row['js'], 3)} | {fmt(row['random_js'], 3)} | {newest} |")
    for gr in summary.get("growth", []):
        weights = ", ".join(f"{b} {gr['newest_after'][b]:.2f} -> {gr['newest_end'][b]:.2f}" for b in gr["newest_after"])
        lines += ["", f"Growth ({gr['label']}): the new expert's rollout router weight at the first curve point after "
                  f"the growth -> at the end: {weights}; return over the {gr['points']} curve points after the growth "
                  f"minus the 1-expert run's (paired by seed): {fmt(gr['return_vs_1_expert'])}."]
    inputs = [g for g in summary["groups"] if g["inputs"].get("obs_rms")]
    if inputs:
        lines += ["", "Inputs over the greedy episodes (stage 0 / stage 1): rms of the normalised observation "
                  "before and after the clip, fraction of entries clipped.", "",
                  "| variant | rms unclipped | rms | clipped | greedy episodes reaching stage 1 |",
                  "|---|---|---|---|---|"]

        def pair(v, d=2):
            return " / ".join("n/a" if x is None else f"{x:.{d}f}" for x in v)
        for g in inputs:
            i = g["inputs"]
            lines.append(f"| {g['label']} | {pair(i['obs_rms_unclipped'])} | {pair(i['obs_rms'])} | "
                         f"{pair(i['clipped_fraction'], 4)} | {i.get('greedy_reaching_stage1', float('nan')):.2f} |")
    return "\n".join(lines)


def compare(paths, out) -> tuple[str, list[Path]]:
    """Group, check, summarise and draw the runs under `paths` into `out`; returns (table, files written)."""
    env, groups = group_runs(paths)
    summary = summarise(groups)
    out = Path(out)
    text = table(env, summary)
    files = [write_text(out / "table.md", text + "\n"),
             write_json(out / "compare.json", {"env": env, **summary,
                                               "runs": {n: [str(d) for d, _ in m] for n, m in groups.items()}})]
    grow = sorted({g * r["steps_per_iteration"] for m in groups.values() for _, r in m
                   for g in [*r["grow_at"], *([] if r.get("switch_at") is None else [r["switch_at"]])]})
    ci = f"{round(CONFIDENCE * 100)}% bootstrap interval over seeds"
    files += figures.plot_curves(curve_bands(groups), grow, out,
                                 f"PPO with MoE-SimBa blocks on {env}: mean and {ci} (dashed: growth / switch)")
    files += figures.plot_specialisation(summary["groups"], out, f"Router specialisation by stage ({env}; {ci})")
    switches = sorted({r["switch_at"] * r["steps_per_iteration"] for m in groups.values() for _, r in m
                       if r.get("switch_at") is not None})
    if len(switches) == 1:
        files += figures.plot_switch(curve_bands(groups), paired_bands(groups), switches[0], out,
                                     f"Returns around the stage switch ({env}; mean and {ci})")
    return text, files


def paired_bands(groups, base: str = "1_expert") -> dict[str, tuple]:
    """{label: (steps, mean, lo, hi)} of each variant's return minus the `base` variant's, per seed (seeds in
    both), on the base's first run's steps."""
    variants = {m[0][1].get("variant"): name for name, m in groups.items()}
    if base not in variants:
        return {}
    ref = {r["seed"]: figures.series(r["curve"], "return") for _, r in groups[variants[base]]}
    out = {}
    for name, members in groups.items():
        if name == variants[base]:
            continue
        diffs, grid = [], None
        for _, r in members:
            x, y = figures.series(r["curve"], "return")
            if r["seed"] not in ref or x is None or ref[r["seed"]][0] is None:
                continue
            grid = ref[r["seed"]][0] if grid is None else grid
            diffs.append(np.interp(grid, x, y) - np.interp(grid, *ref[r["seed"]]))
        if diffs:
            ys = np.array(diffs)
            lo, hi = bootstrap_mean([ys]) if len(ys) > 1 else (None, None)
            out[name] = (grid, ys.mean(0), lo, hi)
    return out


def curve_bands(groups) -> dict[str, dict]:
    """{label: {curve key: (steps, mean, lo, hi), "n": seeds}} on the first run's steps (runs interpolated)."""
    bands = {}
    for name, members in groups.items():
        bands[name] = {"n": len(members)}
        for key, _ in figures.CURVES:
            series = [figures.series(r["curve"], key) for _, r in members]
            series = [s for s in series if s[0] is not None]
            if not series:
                continue
            grid = series[0][0]
            ys = np.array([np.interp(grid, x, y) for x, y in series])
            lo, hi = bootstrap_mean([ys]) if len(ys) > 1 else (None, None)
            bands[name][key] = (grid, ys.mean(0), lo, hi)
    return bands
