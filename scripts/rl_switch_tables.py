"""The switch study's tables in docs/rl.md, from the compare.json of `mtil rl --compare` over its four arms.

    python scripts/rl_switch_tables.py runs/rl/switch_compare/compare.json

Prints two markdown tables: the arms' stage-1 summaries with the paired differences to the continued run (and in
how many seeds the arm is above it), and the router specialisation against the random-router control (and in how
many seeds the trained router separates the stages more than the random one).
"""
import argparse
import json

COLUMNS = [("early_switch_return", "return over stage 1's first 20 iterations"),
           ("area_switch_return", "stage-1 curve mean (area per step)"),
           ("after_switch_return", "mean return over stage-1 episodes"),
           ("final_return", "final return (last 20 iterations)")]
BASE = "1 expert"
LABELS = {"1 expert": "1 expert continued"}


def interval(stat: dict, sign: bool = False, digits: int = 2) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = f.format(stat["mean"]) if stat["lo"] is None else (     # one seed: no interval
        f"{f.format(stat['mean'])} [{f.format(stat['lo'])}, {f.format(stat['hi'])}]")
    return text.replace("-", "−")


def arms_table(compare: dict) -> list[str]:
    groups = {g["label"]: g for g in compare["groups"]}
    base = groups[BASE]["final"]
    lines = ["| arm | " + " | ".join(name for _, name in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, g in groups.items():
        lines.append(f"| {LABELS.get(label, label)} | " + " | ".join(interval(g["final"][k]) for k, _ in COLUMNS)
                     + " |")
    for diff in compare["differences"]:
        if diff["b"] != BASE or not diff["paired"]:
            continue
        arm = groups[diff["a"]]["final"]
        cells = []
        for key, _ in COLUMNS:
            above = sum(a > b for a, b in zip(arm[key]["values"], base[key]["values"]))
            cells.append(f"{interval(diff[key], sign=True)} ({above}/{len(arm[key]['values'])})")
        lines.append(f"| {diff['a']} − continued, paired | " + " | ".join(cells) + " |")
    return lines


def specialisation_table(compare: dict) -> list[str]:
    lines = ["| arm | MoE block | JS, trained router | JS, random router | newest expert's weight, "
             "Breakout -> SpaceInvaders |", "|---|---|---|---|---|"]
    for g in compare["groups"]:
        for block, s in (g.get("specialisation") or {}).items():
            if "newest" not in s:
                continue
            above = sum(t > r for t, r in zip(s["js"]["values"], s["random_js"]["values"]))
            w0, w1 = s["newest"]
            js, random_js = interval(s["js"], digits=3), interval(s["random_js"], digits=3)
            lines.append(f"| {g['label']} | {block} | {js} | {random_js} | "
                         f"{w0:.2f} -> {w1:.2f} (trained > random in {above}/{len(s['js']['values'])} seeds) |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("compare", help="compare.json of `mtil rl --compare` over the switch study's arms")
    compare = json.loads(open(p.parse_args().compare).read())
    print("\n".join(arms_table(compare) + [""] + specialisation_table(compare)))


if __name__ == "__main__":
    main()
