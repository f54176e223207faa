"""`mtil report RUNS --paired A B` on hand-made run directories, against a hand computation."""
import json
from pathlib import Path

import pytest

from mtil.cli import main

TASKS = ["Red", "Green"]
# seed -> 2 x 2 accuracy matrix. For [[a00, a01], [a10, a11]]: Transfer a01, Avg the mean of the four, Last
# (a10 + a11) / 2, BWT a10 - a00, Forgetting a00 - a10.
FREEZE = {0: [[50, 40], [45, 60]], 1: [[52, 42], [46, 62]], 2: [[48, 38], [44, 58]]}
MERGE = {0: [[50, 41], [47, 61]], 1: [[52, 40], [46, 66]], 2: [[48, 38], [40, 58]], 3: [[50, 50], [50, 50]]}
# merge - freeze per seed 0, 1, 2, by hand
HAND = {"transfer": [1, -2, 0], "avg": [1, 0.5, -1], "last": [1.5, 2, -2], "bwt": [2, 0, -4],
        "forgetting": [-2, 0, 4]}


def fake_run(path: Path, matrix, *overrides) -> Path:
    from mtil import config, provenance
    path.mkdir(parents=True)
    cfg = config.load(None, [f"data.order=[{','.join(TASKS)}]", *overrides])
    (path / "config.yaml").write_text(config.dump(cfg))
    (path / "results.json").write_text(json.dumps({"tasks": TASKS, "matrix": matrix, "complete": True,
                                                   "provenance": provenance.record(cfg, {})}))
    return path


@pytest.fixture()
def grid(tmp_path):
    for name, runs in (("freeze", FREEZE), ("merge", MERGE)):
        for seed, m in runs.items():
            fake_run(tmp_path / f"{name}-seed{seed}", [[float(x) for x in row] for row in m],
                     f"policy.name={name}", f"seed={seed}")
    return tmp_path


def test_paired_report_equals_the_hand_computation(grid, capsys):
    """Three paired seeds: the mean difference by hand, and the 95% percentile bootstrap interval is [min, max] of
    the differences (each extreme mean has probability 1/27 = 3.7% > 2.5% among the 27 equally likely resamples)."""
    capsys.readouterr()
    assert main(["report", str(grid), "--paired", "merge", "freeze", "--format", "json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["seeds"] == [0, 1, 2] and p["unpaired"] == {"merge": ["3"]}
    rows = {r["metric"]: r for r in p["rows"]}
    for metric, diffs in HAND.items():
        r = rows[metric]
        assert r["diffs"] == pytest.approx(diffs)
        assert r["diff_mean"] == pytest.approx(sum(diffs) / 3)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((min(diffs), max(diffs)))
    assert rows["last"]["a_mean"] == pytest.approx((54 + 56 + 49) / 3)
    assert rows["last"]["b_mean"] == pytest.approx((52.5 + 54 + 51) / 3)
    assert main(["report", str(grid), "--paired", "merge", "freeze"]) == 0
    out = capsys.readouterr().out
    assert "| Last | 53.00 | 52.50 | +0.50 | [-2.00, +2.00] | +1.50 +2.00 -2.00 |" in out
    assert "seeds of merge without a partner, left out: 3" in out


def test_bootstrap_interval_is_seeded_and_collapses_on_equal_differences():
    from mtil.report import bootstrap_interval
    kw = dict(resamples=2000, confidence=0.95, seed=5)
    assert bootstrap_interval([1.5] * 5, **kw) == (1.5, 1.5)
    d = [0.3, -1.2, 2.0, 0.7, 1.1]
    assert bootstrap_interval(d, **kw) == bootstrap_interval(d, **kw)
    lo, hi = bootstrap_interval(d, **kw)
    assert min(d) < lo < sum(d) / 5 < hi < max(d)


def test_paired_figure_and_errors(grid, tmp_path, capsys):
    fig = tmp_path / "paired.png"
    assert main(["report", str(grid), "--paired", "merge", "freeze", "--figure", str(fig)]) == 0
    assert fig.stat().st_size > 1000
    capsys.readouterr()
    assert main(["report", str(grid), "--paired", "merge", "grow"]) == 2
    assert "no group named 'grow'; the groups are: 'freeze'; 'merge'" in capsys.readouterr().err
