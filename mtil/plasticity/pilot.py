"""The pilot table of the second design: one block per cell (a results.json of `relabel_pilot.yaml` with some
`--set`), one column per chunk, rows: No Expansion's accuracy on the chunk, a fresh copy's (trained beside it on the
same batches), the plasticity gap (mean and the smallest over seeds), dead h1 / h2 units and the effective rank of
h2; then which cells and chunk counts meet the study's criterion (gap >= MIN_GAP points in every seed).

    python -m mtil.plasticity.pilot RESULTS [RESULTS ...]   (prints markdown; RESULTS = a results.json or its folder)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import MtilError, exit_status

MIN_GAP = 0.05  # the study's criterion: No Expansion's gap at least 5 points in every pilot seed


def load_cell(path: Path) -> dict:
    """Per-chunk lists (one per seed) of No Expansion's acc_new, fresh_acc_new, gap, dead h1 / h2, eff_rank."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MtilError(f"{path} is not a finished plasticity study's results.json ({e})") from None
    runs = [results["runs"].get(f"no_expansion-seed{s}") for s in results["seeds"]]
    if not all(runs) or "gap" not in runs[0]["chunks"][-1]:
        raise MtilError(f"{path} holds no No Expansion runs with the gap at every chunk; run relabel_pilot.yaml")
    cfg = results["config"]
    name = (f"width {cfg['methods']['no_expansion']['hidden']}, {cfg['data']['num_classes']} classes, "
            f"{cfg['study']['steps_per_chunk']} steps/chunk, pool {cfg['data']['max_examples']}")
    col = lambda f: [[f(ch) for ch in r["chunks"]] for r in runs]  # noqa: E731  [seed][chunk]
    return {"name": name, "file": path.name, "seeds": results["seeds"], "acc": col(lambda ch: ch["acc_new"]),
            "fresh": col(lambda ch: ch.get("fresh_acc_new")), "gap": col(lambda ch: ch.get("gap")),
            "dead_h1": col(lambda ch: ch["dead"]["h1"]), "dead_h2": col(lambda ch: ch["dead"]["h2"]),
            "eff_rank": col(lambda ch: ch["eff_rank"])}


def _mean(values) -> float:
    return sum(values) / len(values)


def qualifying_chunks(cell: dict) -> list[int]:
    """Chunks c at which the gap is >= MIN_GAP in every seed (a study of c chunks would show the loss)."""
    return [c + 1 for c, gaps in enumerate(zip(*cell["gap"])) if None not in gaps and min(gaps) >= MIN_GAP]


def pilot_markdown(cells: list[dict]) -> str:
    parts = []
    for cell in cells:
        chunks = len(cell["acc"][0])
        head = "| " + " | ".join(["", *(f"c{c}" for c in range(1, chunks + 1))]) + " |"
        rule = "|---|" + "---:|" * chunks
        row = lambda label, key, f: ("| " + label + " | " + " | ".join(f(v) for v in zip(*cell[key])) + " |")  # noqa: E731
        pct = lambda v: f"{100 * _mean(v):.0f}"  # noqa: E731
        lines = [head, rule, row("No Expansion acc %", "acc", pct), row("fresh copy acc %", "fresh", pct),
                 row("gap mean (pts)", "gap", lambda v: f"{100 * _mean(v):+.0f}"),
                 row("gap min over seeds", "gap", lambda v: f"{100 * min(v):+.0f}"),
                 row("dead h1 %", "dead_h1", pct), row("dead h2 %", "dead_h2", pct),
                 row("eff. rank h2", "eff_rank", lambda v: f"{_mean(v):.0f}")]
        ok = qualifying_chunks(cell)
        verdict = (f"gap >= {100 * MIN_GAP:.0f} points in every seed at chunk(s) {', '.join(map(str, ok))}" if ok
                   else f"the gap never reaches {100 * MIN_GAP:.0f} points in every seed")
        parts.append(f"**{cell['name']}** ({cell['file']}; seeds {cell['seeds']}, means over seeds): {verdict}.\n\n"
                     + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    return exit_status(lambda: print(pilot_markdown([load_cell(Path(p)) for p in argv]), end=""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
