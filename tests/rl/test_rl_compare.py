"""`mtil rl --compare` on hand-written run directories (no JAX needed): grouping by environment and variant,
distinct seeds, the refusals, bootstrap intervals and differences, the specialisation table and figures."""
import json

import numpy as np
import pytest
import yaml

from mtil.cli import main
from mtil import stats
from mtil.rl import compare

VARIANTS = {"grow": ("1-to-2 grow", 1, 2), "1_expert": ("1 expert", 1, 1), "no_moe": ("No MoE", 0, 0),
            "k_experts": ("2 experts", 2, 2)}


def _run(root, variant, seed, final=10.0, env="two_stage_minatar", steps=1000, spec=None):
    label, start, end = VARIANTS[variant]
    d = root / f"{variant}_s{seed}"
    d.mkdir(parents=True)
    curve = [{"iteration": i, "steps": 100 * i, "episodes": 4, "return": final * min(i / 9, 1), "return_stage0": 5.0,
              "return_stage1": final * min(i / 9, 1) - 5, "reached_stage1": 0.1 * i, "max_stage": 0.1 * i,
              "router": {"critic.block0": [0.4, 0.6] if variant == "grow" and i > 5 else [1.0]}}
             for i in range(1, 11)]
    results = {"kind": "rl", "label": label, "variant": variant, "env": env, "seed": seed, "complete": True,
               "steps_per_iteration": 100, "grow_at": [5] if variant == "grow" else [], "final_window": 2,
               "final_return": final, "final_return_stage0": 5.0, "final_return_stage1": final - 5,
               "final_reached_stage1": 0.9, "curve": curve}
    (d / "results.json").write_text(json.dumps(results))
    cfg = {"seed": seed, "env": {"name": env}, "ppo": {"total_steps": steps},
           "net": {"block": "dense" if variant == "no_moe" else "moe"},
           "moe": {"experts_start": max(start, 1), "experts_end": max(end, 1)}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if spec is not None:
        (d / "specialisation.json").write_text(json.dumps(spec))
    return d


def _spec(js, random):
    row = {"experts": 2, "p0": [0.7, 0.3], "p1": [0.4, 0.6], "js": js, "newest": [0.3, 0.6], "random_js": random}
    return {"episodes": 10, "reaching_stage1": 9, "steps": [100.0, 50.0], "random_routers": len(random),
            "obs_clip": 5.0, "obs_rms_unclipped": [0.5, 1.5], "obs_rms": [0.4, 0.7], "clipped_fraction": [0.0, 0.01],
            "blocks": {"critic.block0": row, "actor.block0": {**row, "js": js / 2}}}


def test_interval_is_a_percentile_bootstrap_of_the_mean():
    a = [1.0, 2.0, 3.0, 10.0, 4.0]
    cell = stats.interval(a)
    assert cell["mean"] == pytest.approx(4.0) and cell["lo"] < 4.0 < cell["hi"]
    # a hand-written percentile bootstrap agrees to resampling noise (the means lie on a 0.2 lattice)
    rng = np.random.default_rng(1)
    means = np.asarray(a)[rng.integers(0, 5, (20000, 5))].mean(1)
    assert cell["lo"] == pytest.approx(np.percentile(means, 2.5), abs=0.25)
    assert cell["hi"] == pytest.approx(np.percentile(means, 97.5), abs=0.25)
    diff = stats.interval([5.0, 6.0, 7.0], [1.0, 1.5, 2.0])
    assert diff["mean"] == pytest.approx(4.5) and 0 < diff["lo"] < 4.5 < diff["hi"] and diff["n"] == [3, 3]
    assert stats.interval([3.0])["lo"] is None                       # one seed: no interval
    assert stats.interval([2.0, 2.0, 2.0]) == {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": [3]}


def test_compare_groups_by_variant_counts_seeds_and_reports_differences(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(3):
        _run(runs, "grow", seed, final=20 + seed, spec=_spec(0.2 + 0.01 * seed, [0.05, 0.07]))
        _run(runs, "1_expert", seed, final=10 + seed)
        _run(runs, "no_moe", seed, final=15 + seed)
        _run(runs, "k_experts", seed, final=16 + seed, spec=_spec(0.02, [0.04, 0.06]))
    assert main(["rl", "--compare", str(runs), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| 1-to-2 grow | 3 | 21.00 [" in table and "| No MoE | 3 | 16.00 [" in table
    assert "| 1-to-2 grow − 1 expert (paired by seed) | 10.00 [10.00, 10.00] |" in table   # same gap in every seed
    assert "| 1-to-2 grow − No MoE | 5.00 [" in table
    assert "| No MoE − 1 expert | 5.00 [" in table
    assert "| 1-to-2 grow | critic.block0 | 0.210 [" in table and "0.060 [0.060, 0.060]" in table
    # after the growth (points 6-10) the fake grow runs are 10 x mean(6/9, 7/9, 8/9, 1, 1) above the 1-expert runs
    assert "minus the 1-expert run's (paired by seed): 8.67 [8.67, 8.67]" in table
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    grow = next(g for g in summary["groups"] if g["variant"] == "grow")
    assert grow["seeds"] == [0, 1, 2] and grow["final"]["final_return"]["values"] == [20.0, 21.0, 22.0]
    assert grow["specialisation"]["critic.block0"]["random_js"]["values"] == pytest.approx([0.06] * 3)
    for name in ("learning_curves.png", "specialisation.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 1000


@pytest.mark.parametrize("case,message", [
    ("mixed_env", "runs are of 2 environments (Craftax-Symbolic-v1 x1, two_stage_minatar x2)"),
    ("repeated_seed", "seed 0 of '1 expert' appears twice"),
    ("budget", "the variants were run with different settings (ppo.total_steps differ)"),
    ("budget_in_group", "the '1 expert' runs differ in ppo.total_steps"),
])
def test_compare_refuses_mixed_runs_with_one_line(tmp_path, capsys, case, message):
    _run(tmp_path / "a", "1_expert", 0)
    if case == "mixed_env":
        _run(tmp_path / "a", "grow", 0)
        _run(tmp_path / "b", "1_expert", 0, env="Craftax-Symbolic-v1")
    elif case == "repeated_seed":
        _run(tmp_path / "b", "1_expert", 0)
    elif case == "budget":
        _run(tmp_path / "b", "no_moe", 0, steps=2000)
    else:
        _run(tmp_path / "b", "1_expert", 1, steps=2000)
    assert main(["rl", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mtil: error: --compare: ") and message in err
    assert not (tmp_path / "c").exists()


def test_final_values_weight_each_curve_point_by_its_episodes():
    from mtil.rl.figures import final_mean, finals
    curve = [{"return": 100.0, "episodes": 50}, {"return": 10.0, "episodes": 40}, {"return": None, "episodes": 0},
             {"return": 20.0, "episodes": 10}]
    assert final_mean(curve, "return", 3) == pytest.approx((10 * 40 + 20 * 10) / 50)
    assert final_mean(curve, "return", 1) == pytest.approx(20.0) and final_mean(curve[2:3], "return", 1) is None
    assert finals(curve, 4)["final_return"] == pytest.approx((5000 + 400 + 200) / 100)


def test_stage1_onset_is_the_first_point_where_half_the_episodes_reach_stage_1():
    curve = [{"steps": 100, "reached_stage1": 0.2}, {"steps": 200, "reached_stage1": None},
             {"steps": 300, "reached_stage1": 0.5}, {"steps": 400, "reached_stage1": 0.9}]
    assert compare.stage1_onset(curve) == 300 and compare.stage1_onset(curve[:2]) is None
