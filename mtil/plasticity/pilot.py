"""The pilot table: one row per study directory (a regime), with what the regime choice needs: No Expansion's
plasticity gap at the last chunk, DynamicMoE g1 / g4's dead-unit shares per MLP layer, accuracies, time.

    python -m mtil.plasticity.pilot DIR [DIR ...]     (prints markdown; DIR = an `mtil plasticity --out`)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import MtilError, exit_status


def _last(results: dict, method: str) -> dict | None:
    run = results["runs"].get(f"{method}-seed{results['seeds'][0]}")
    return run["chunks"][-1] if run else None


def pilot_row(out: Path) -> dict:
    """The row of the study in `out` (its first seed)."""
    try:
        results = json.loads((Path(out) / "results.json").read_text())
        timings = json.loads((Path(out) / "timings.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MtilError(f"{out} holds no finished study ({e})") from None
    row = {"regime": Path(out).name, "chunks": results["config"]["study"]["chunks"],
           "wall_min": sum(t["wall_s"] for t in timings.values()) / 60,
           "cpu_min": sum(t["cpu_s"] for t in timings.values()) / 60}
    for m in ("no_expansion", "dynamic_moe_g1", "dynamic_moe_g4"):
        row[m] = _last(results, m)
    return row


def _dead(chunk: dict | None) -> str:
    if not chunk or "dead" not in chunk:
        return "–"
    return " / ".join(f"{100 * v:.0f}" for v in chunk["dead"].values())


def _pct(chunk: dict | None, key: str, signed: bool = False) -> str:
    if not chunk or chunk.get(key) is None:
        return "–"
    return f"{100 * chunk[key]:+.1f}" if signed else f"{100 * chunk[key]:.1f}"


def pilot_markdown(rows: list[dict]) -> str:
    lines = ["| regime | No Exp. gap @ last (pts) | No Exp. new-chunk acc: continued / fresh | No Exp. seen acc | "
             "g1 seen acc | g4 seen acc | g1 dead % (e1 / h1 / e2 / h2 / e3) | g4 dead % | wall min | CPU min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ne, g1, g4 = r["no_expansion"], r["dynamic_moe_g1"], r["dynamic_moe_g4"]
        lines.append(f"| {r['regime']} | {_pct(ne, 'gap', True)} | {_pct(ne, 'acc_new')} / {_pct(ne, 'fresh_acc_new')} "
                     f"| {_pct(ne, 'acc_seen')} | {_pct(g1, 'acc_seen')} | {_pct(g4, 'acc_seen')} | {_dead(g1)} | "
                     f"{_dead(g4)} | {r['wall_min']:.1f} | {r['cpu_min']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    return exit_status(lambda: print(pilot_markdown([pilot_row(Path(d)) for d in argv]), end=""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
