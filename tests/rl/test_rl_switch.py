"""The switch study (issue 33): stages by training step, the function-preserving grown expert, the per-stage lr
decay, the study driver's branching and the paired comparison of the four arms."""
import json

import numpy as np
import pytest
import yaml

jax = pytest.importorskip("jax", reason="the [rl] extra is not installed")  # CI installs it: never skipped there
import jax.numpy as jnp  # noqa: E402

from mtil.cli import main  # noqa: E402
from mtil.rl import compare, envs, nets, optim, study, train  # noqa: E402


def _episodes(env, n=12, steps=300):
    def rollout(key):
        obs, state = env.reset(key)

        def step(carry, k):
            obs, state, alive = carry
            k_a, k_s = jax.random.split(k)
            obs2, state2, _, done, _ = env.step(k_s, state, jax.random.randint(k_a, (), 0, 4))
            return (obs2, state2, alive & ~done), (env.stage(state), obs, alive)

        return jax.lax.scan(step, (obs, state, True), jax.random.split(key, steps))[1]

    return jax.device_get(jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(3), n)))


def test_stage_modes_play_one_game_per_episode():
    """first: Breakout only, even past switch_at points; second: SpaceInvaders from step 0; either: both kinds."""
    stage, obs, alive = _episodes(envs.TwoStageMinAtar(switch_at=1, max_steps=300, layout="separate",
                                                       stages="first"))
    assert not stage[alive].any() and not obs[alive][..., 4:].any() and obs[alive][..., :4].any()
    stage, obs, alive = _episodes(envs.TwoStageMinAtar(1, 300, "separate", "second"))
    assert stage[alive].all() and not obs[alive][..., :4].any() and obs[alive][..., 4:].any()
    stage, _, alive = _episodes(envs.TwoStageMinAtar(1, 300, "separate", "either"), n=32)
    first = stage[:, 0]
    assert 0 < first.sum() < 32 and all((stage[i][alive[i]] == first[i]).all() for i in range(32))
    with pytest.raises(ValueError):
        envs.TwoStageMinAtar(1, 300, stages="both")


def test_zero_output_growth_preserves_the_function_and_the_reference_growth_does_not():
    one, two = nets.ActorCritic(4, "flat", 8, 4, 1, 2, 1, 5), nets.ActorCritic(4, "flat", 8, 4, 1, 2, 2, 5)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 12))
    params = jax.jit(one.init)(jax.random.PRNGKey(0), x)
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(5), p.shape), params)
    fresh = jax.jit(two.init)(jax.random.PRNGKey(2), x)
    grown = optim.grow_like(params, fresh)
    zero = train.zero_output_expert(grown)
    (l1, v1), (lz, vz), (lg, vg) = one.apply(params, x), two.apply(zero, x), two.apply(grown, x)
    np.testing.assert_allclose(lz, l1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vz, v1, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(vg - v1)).max() > 1e-3            # a fresh expert changes the output
    _, inter = two.apply(zero, x, mutable=["intermediates"])
    for probs in nets.router_probs(inter["intermediates"]).values():
        np.testing.assert_allclose(probs, 0.5, rtol=1e-6)      # equal router weights for every input
    moe, old = zero["params"]["critic"]["block1"]["moe"], params["params"]["critic"]["block1"]["moe"]
    assert not np.asarray(moe["w2"][1]).any() and not np.asarray(moe["b2"][1]).any()
    np.testing.assert_array_equal(moe["w2"][0], 2 * old["w2"][0])
    np.testing.assert_array_equal(moe["w1"][1], fresh["params"]["critic"]["block1"]["moe"]["w1"][1])
    # gradients reach the new expert's output layer at once
    g = jax.grad(lambda p: two.apply(p, x)[1].sum())(zero)["params"]["critic"]["block1"]["moe"]["w2"][1]
    assert np.abs(np.asarray(g)).sum() > 0


def test_switch_config_growth_points_and_refusals():
    cfg = train.load_config("rl/minatar_switch_grow.yaml")
    assert train.switch_iteration(cfg) == 61 and train.iterations(cfg) == 122 and train.grow_points(cfg) == [61]
    assert train.variant(cfg) == "grow"
    assert train.variant(train.load_config("rl/minatar_switch_grow_zero.yaml")) == "grow_zero"
    assert train.label(train.load_config("rl/minatar_switch_fresh.yaml")) == "fresh network"
    assert train.grow_points(train.load_config("rl/minatar_switch_grow.yaml", ["moe.experts_end=3"])) == [61, 91]
    from mtil.errors import MtilError
    with pytest.raises(MtilError, match="switch_step"):
        train.load_config("rl/minatar_switch_1_expert.yaml", ["env.switch_step=3000000"])
    with pytest.raises(MtilError, match="set env.switch_step"):
        train.load_config("rl/minatar_grow.yaml", ["train.reset_at_switch=true"])


def test_study_plan_branches_every_arm_from_the_continued_run(tmp_path):
    jobs = study.plan("rl/minatar_switch", ["grow", "fresh", "1_expert", "grow_zero"], [4], tmp_path, [],
                      source="1_expert")
    assert [j["name"] for j in jobs] == ["1_expert_s4", "grow_s4", "grow_zero_s4", "fresh_s4"]
    assert jobs[0]["after"] is None and all(j["after"] == tmp_path / "1_expert_s4" for j in jobs[1:])
    assert study.command(jobs[3])[-2:] == ["--start-from", str(tmp_path / "1_expert_s4")]


def _switch_run(root, variant, seed, stage1_return):
    """A hand-written switch-study run: 10 curve points, the switch before iteration 5."""
    labels = {"1_expert": "1 expert", "grow": "1-to-2 grow", "grow_zero": "1-to-2 grow (zero output)",
              "fresh": "fresh network"}
    d = root / f"{variant}_s{seed}"
    d.mkdir(parents=True)
    curve = [{"iteration": i, "steps": 100 * i, "episodes": 4, "return": 3.0 + seed if i <= 5 else stage1_return,
              "return_stage0": 3.0 + seed if i <= 5 else 0.0, "return_stage1": 0.0 if i <= 5 else stage1_return,
              "reached_stage1": float(i > 5), "router": {}} for i in range(1, 11)]
    results = {"kind": "rl", "label": labels[variant], "variant": variant, "env": "two_stage_minatar", "seed": seed,
               "complete": True, "steps_per_iteration": 100, "grow_at": [5] if "grow" in variant else [],
               "switch_at": 5, "final_window": 2, "curve": curve}
    (d / "results.json").write_text(json.dumps(results))
    cfg = {"seed": seed, "env": {"name": "two_stage_minatar", "switch_step": 500},
           "moe": {"experts_end": 2 if "grow" in variant else 1,
                   "grow_init": "zero_output" if variant == "grow_zero" else "fresh"},
           "train": {"reset_at_switch": variant == "fresh"}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_compare_pairs_the_arms_by_seed(tmp_path, capsys):
    # stage-1 returns per seed: continued 10, 20, 30; fresh continued + 1, 2, 3 (paired: +2 exactly, while the
    # unpaired spread of either arm is 10)
    for seed in range(3):
        base = 10.0 * (seed + 1)
        _switch_run(tmp_path, "1_expert", seed, base)
        _switch_run(tmp_path, "fresh", seed, base + seed + 1)
        _switch_run(tmp_path, "grow_zero", seed, base)
    assert main(["rl", "--compare", str(tmp_path), "--out", str(tmp_path / "cmp")]) == 0
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    diffs = {(d["a"], d["b"]): d for d in out["differences"]}
    fresh = diffs[("fresh network", "1 expert")]
    assert fresh["paired"] and fresh["final_return"]["mean"] == pytest.approx(2.0)
    assert 1.0 <= fresh["final_return"]["lo"] and fresh["final_return"]["hi"] <= 3.0
    assert diffs[("1-to-2 grow (zero output)", "1 expert")]["after_switch_return"]["mean"] == pytest.approx(0.0)
    one = next(g for g in out["groups"] if g["variant"] == "1_expert")
    assert one["final"]["before_switch_return"]["mean"] == pytest.approx(4.0)   # seeds 3, 4, 5 before the switch
    assert one["final"]["after_switch_return"]["values"] == pytest.approx([10.0, 20.0, 30.0])
    assert diffs[("fresh network", "1 expert")]["early_switch_return"]["mean"] == pytest.approx(2.0)
    assert "mean return over stage 1" in (tmp_path / "cmp" / "table.md").read_text()
    assert (tmp_path / "cmp" / "switch.png").exists()
    grid, mean, lo, hi = compare.paired_bands(compare.group_runs([tmp_path])[1])["fresh network"]
    np.testing.assert_allclose(mean, np.where(grid > 500, 2.0, 0.0))   # seed-paired: 0 before the switch, +2 after


def test_switch_finals_split_the_curve_at_the_switch():
    # switch before iteration 5, window 2; points weighted by their episodes
    returns = {1: 9.0, 2: 7.0, 3: 5.0, 4: 3.0, 5: 1.0, 6: 2.0, 7: 4.0, 8: 6.0}
    episodes = {3: 1, 4: 3, 5: 1, 6: 3, 7: 2, 8: 2}
    curve = [{"iteration": i, "return": r, "episodes": episodes.get(i, 1)} for i, r in returns.items()]
    got = compare.switch_finals({"switch_at": 4, "final_window": 2, "curve": curve})
    assert got["before_switch_return"] == pytest.approx((5 * 1 + 3 * 3) / 4)          # iterations 3, 4
    assert got["early_switch_return"] == pytest.approx((1 * 1 + 2 * 3) / 4)           # iterations 5, 6
    assert got["after_switch_return"] == pytest.approx((1 + 6 + 8 + 12) / 8)          # iterations 5-8
    assert got["area_switch_return"] == pytest.approx((1 + 2 + 4 + 6) / 4)            # unweighted points 5-8
    assert compare.switch_finals({"switch_at": None, "curve": curve}) == {k: None for k, _ in compare.SWITCH_FINALS}


TINY = ["ppo.total_steps=2048", "ppo.num_envs=16", "ppo.num_steps=16", "ppo.minibatches=2", "ppo.epochs=2",
        "net.hidden=16", "env.switch_at=2", "env.max_steps=200", "env.switch_step=1024", "train.log_every=1",
        "train.checkpoint_every=3", "trace.episodes=2", "trace.max_steps=200", "specialisation.episodes=4",
        "specialisation.max_steps=200", "specialisation.random_routers=2"]


@pytest.mark.slow
@pytest.mark.timeout(3600)   # five runs' XLA compilations; about 15 min wall on the shared 2-core machine
def test_switch_arms_end_to_end(tmp_path, monkeypatch):
    """The continued run trains on stage 0 then stage 1; the arms start from its snapshot; the zero-output
    grow run acts exactly as the continued one in its first iteration after the switch; the fresh network
    restarts; the lr restarts at the switch."""
    monkeypatch.setenv("MTIL_JAX_CACHE", str(tmp_path / "xla"))
    sets = [a for kv in TINY for a in ("--set", kv)]
    one = tmp_path / "one"
    assert main(["rl", "rl/minatar_switch_1_expert.yaml", "--out", str(one), *sets]) == 0
    runs = {"one": json.loads((one / "results.json").read_text())}
    for arm in ("grow", "grow_zero", "fresh"):
        assert main(["rl", f"rl/minatar_switch_{arm}.yaml", "--out", str(tmp_path / arm), *sets,
                     "--start-from", str(one)]) == 0
        runs[arm] = json.loads((tmp_path / arm / "results.json").read_text())
    curve = runs["one"]["curve"]
    assert runs["one"]["switch_at"] == 4 and (one / "snapshot-4.npz").exists()
    assert all(p["reached_stage1"] == 0 for p in curve[:4] if p["reached_stage1"] is not None)
    assert all(p["reached_stage1"] == 1 for p in curve[4:] if p["reached_stage1"] is not None)
    lr = [p["lr"] for p in curve]
    assert lr[0] == pytest.approx(5e-4) and lr[4] == pytest.approx(5e-4) and lr[3] == pytest.approx(5e-4 / 4)
    for arm in ("grow", "grow_zero", "fresh"):   # every arm is the continued run until the switch
        assert runs[arm]["curve"][:4] == curve[:4]
    assert runs["grow_zero"]["curve"][4]["return"] == curve[4]["return"]      # function preserved at the switch
    assert runs["grow_zero"]["curve"][-1]["loss"] != curve[-1]["loss"]
    events = [json.loads(x) for x in (tmp_path / "fresh" / "events.jsonl").read_text().splitlines()]
    assert {"event": "switch", "iteration": 4, "steps": 1024, "reset_network": True} in events
    spec = json.loads((tmp_path / "grow" / "specialisation.json").read_text())
    assert all(n > 0 for n in spec["steps"]) and spec["blocks"]["critic.block0"]["experts"] == 2
    # resuming across the switch continues in stage 1 bit-exactly
    part = tmp_path / "part"
    assert main(["rl", "rl/minatar_switch_fresh.yaml", "--out", str(part), *sets, "--start-from", str(one),
                 "--stop-after", "6"]) == 0
    assert not (part / "specialisation.json").exists()
    assert main(["rl", "--out", str(part), "--measure"]) == 0          # the statistic of a stopped run
    assert all(n > 0 for n in json.loads((part / "specialisation.json").read_text())["steps"])
    assert main(["rl", "--out", str(part), "--resume"]) == 0
    assert json.loads((part / "results.json").read_text())["curve"] == runs["fresh"]["curve"]
