"""`mtil rl` end to end on the two-stage MinAtar stream: a tiny run of each of the four variants, growth keeps the
old experts and their Adam state, resume equality, --start-from equality, the comparison command, Fig. 4 from
`mtil plot`, errors; and a tiny Craftax-Symbolic grow run (the paper's environment path).

Sized for CI on 2 shared cores: 16 envs x 16 steps x 8 iterations, width 16; the XLA compilations (most of the
time) are shared through a session-wide persistent compilation cache.
"""
import json

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the [rl] extra is not installed")  # CI installs it: never skipped there

from mtil.cli import main  # noqa: E402

TINY = ["ppo.total_steps=2048", "ppo.num_envs=16", "ppo.num_steps=16", "ppo.minibatches=2", "ppo.epochs=2",
        "net.hidden=16", "env.switch_at=2", "env.max_steps=200", "train.log_every=2", "train.checkpoint_every=3",
        "trace.episodes=2", "trace.max_steps=200", "specialisation.episodes=4", "specialisation.max_steps=200",
        "specialisation.random_routers=2"]
VARIANTS = {"no_moe": "No MoE", "1_expert": "1 expert", "2_experts": "2 experts", "grow": "1-to-2 grow"}


def _sets(extra=()):
    return [a for kv in [*TINY, *extra] for a in ("--set", kv)]


@pytest.fixture(scope="session")
def rl_runs(tmp_path_factory):
    """The four variants, seed 0, run once per session through the CLI."""
    import os
    root = tmp_path_factory.mktemp("rl")
    os.environ["MTIL_JAX_CACHE"] = str(root / "xla-cache")
    for name in VARIANTS:
        assert main(["rl", f"rl/minatar_{name}.yaml", "--out", str(root / name), *_sets()]) == 0
    return root


def _results(path):
    return json.loads((path / "results.json").read_text())


def _leaves(path):
    with np.load(path / "checkpoint.npz") as z:
        return [z[k] for k in sorted(k for k in z.files if k.startswith("leaf"))]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_runs_and_writes_its_run_directory(rl_runs, name):
    out = rl_runs / name
    r = _results(out)
    assert r["kind"] == "rl" and r["complete"] and r["label"] == VARIANTS[name]
    assert r["iterations"] == 8 and [p["iteration"] for p in r["curve"]] == [2, 4, 6, 8]
    assert r["curve"][-1]["steps"] == 2048 and r["final_return"] is not None
    assert r["final_return_stage0"] + r["final_return_stage1"] == pytest.approx(r["final_return"], abs=1e-6)
    assert 0 <= r["final_reached_stage1"] <= 1
    assert (out / "config.yaml").exists() and (out / "checkpoint.npz").exists()
    assert (out / "snapshot-4.npz").exists() == (name == "grow")
    spec = json.loads((out / "specialisation.json").read_text())
    assert spec["episodes"] == 4 and sum(spec["steps"]) > 0
    assert sorted(spec["blocks"]) == ([] if name == "no_moe" else ["actor.block0", "critic.block0", "critic.block1"])
    assert {p.name for p in (out / "figures").iterdir()} == {
        "learning_curve.png", "learning_curve.svg", "router_trace.png", "router_trace.svg"}
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    trace = json.loads((out / "trace.json").read_text())
    assert len(trace["stage"]) == trace["length"] > 0
    if name == "grow":
        assert events == [{"event": "grow", "iteration": 4, "steps": 1024, "experts_from": 1, "experts_to": 2,
                           "blocks": 3}]
        assert [p["experts"] for p in r["curve"]] == [1, 1, 2, 2]
        assert len(r["curve"][-1]["router"]["critic.block0"]) == 2
        router = np.array(trace["router"])
        assert router.shape == (trace["length"], 2) and np.allclose(router.sum(1), 1, atol=1e-5)
    else:
        assert events == []
    if name == "no_moe":
        assert trace["layer"] is None and r["curve"][-1]["router"] == {}


@pytest.mark.slow
def test_grow_run_equals_one_expert_run_until_the_growth(rl_runs):
    """Same seed: the grow run is the 1-expert run up to the growth point (it continues its state)."""
    one, grow = _results(rl_runs / "1_expert")["curve"], _results(rl_runs / "grow")["curve"]
    assert one[:2] == grow[:2]
    assert one[2] != grow[2]


@pytest.mark.slow
def test_growth_keeps_old_experts_and_their_adam_state(rl_runs, tmp_path):
    from mtil.rl import train
    cfg = train.load_config("rl/minatar_grow.yaml", TINY)
    run = train.Run(cfg, tmp_path / "g")
    run.execute(stop_after=3)
    before = run.load_checkpoint()
    after = run.grow(before)
    b_moe = before.params["params"]["critic"]["block0"]["moe"]
    a_moe = after.params["params"]["critic"]["block0"]["moe"]
    assert b_moe["w1"].shape[0] == 1 and a_moe["w1"].shape[0] == 2
    np.testing.assert_array_equal(a_moe["w1"][:1], b_moe["w1"])
    np.testing.assert_array_equal(a_moe["router"]["kernel"][:, :1], b_moe["router"]["kernel"])
    assert float(np.abs(a_moe["w1"][1]).sum()) > 0
    b_mu = before.opt.mu["params"]["critic"]["block0"]["moe"]
    a_mu = after.opt.mu["params"]["critic"]["block0"]["moe"]
    a_count = after.opt.count["params"]["critic"]["block0"]["moe"]
    np.testing.assert_array_equal(a_mu["w2"][:1], b_mu["w2"])
    assert float(np.abs(b_mu["w2"]).sum()) > 0 and not np.asarray(a_mu["w2"][1]).any()
    assert int(a_count["w2"][0].min()) == 3 * cfg.ppo.epochs * cfg.ppo.minibatches and not a_count["w2"][1].any()
    # every leaf outside the MoE blocks is untouched
    np.testing.assert_array_equal(after.params["params"]["pi"]["kernel"], before.params["params"]["pi"]["kernel"])
    np.testing.assert_array_equal(after.opt.nu["params"]["v"]["kernel"], before.opt.nu["params"]["v"]["kernel"])


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(rl_runs, tmp_path, capsys):
    """Stopped before the growth, resumed across it: same curve and the same final state, bit for bit. A
    checkpoint of another config put in its place (same shapes: the 1-expert run's) is refused."""
    out = tmp_path / "resumed"
    assert main(["rl", "rl/minatar_grow.yaml", "--out", str(out), "--stop-after", "3", *_sets()]) == 0
    assert not _results(out)["complete"]
    own = (out / "checkpoint.npz").read_bytes()
    with np.load(out / "checkpoint.npz") as z:
        assert json.loads(str(z["meta"]))["config_sha256"] == _results(out)["provenance"]["config_sha256"]
    (out / "checkpoint.npz").write_bytes((rl_runs / "1_expert" / "checkpoint.npz").read_bytes())
    assert main(["rl", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its checkpoint was written by another run (config sha256" in err
    (out / "checkpoint.npz").write_bytes(own)
    assert main(["rl", "--out", str(out), "--resume"]) == 0
    full, resumed = _results(rl_runs / "grow"), _results(out)
    assert resumed["complete"] and resumed["curve"] == full["curve"]
    for a, b in zip(_leaves(rl_runs / "grow"), _leaves(out)):
        np.testing.assert_array_equal(a, b)
    events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert events == ["resume", "grow"]


@pytest.mark.slow
def test_a_growth_inside_a_log_window(tmp_path):
    """Growth before iteration 4 with a curve point every 3 iterations: the point at 6 averages the router
    weights of the iterations after the growth."""
    out = tmp_path / "g"
    assert main(["rl", "rl/minatar_grow.yaml", "--out", str(out), *_sets(["train.log_every=3"])]) == 0
    curve = _results(out)["curve"]
    assert [p["iteration"] for p in curve] == [3, 6, 8] and [p["experts"] for p in curve] == [1, 2, 2]
    assert [len(p["router"]["critic.block0"]) for p in curve] == [1, 2, 2]


@pytest.mark.slow
def test_start_from_the_grow_snapshot_equals_the_one_expert_run(rl_runs, tmp_path, capsys):
    """The 1-expert run started from the grow run's pre-growth snapshot is the 1-expert run, bit for bit."""
    out = tmp_path / "one"
    assert main(["rl", "rl/minatar_1_expert.yaml", "--out", str(out), "--start-from", str(rl_runs / "grow"),
                 *_sets()]) == 0
    assert _results(out)["curve"] == _results(rl_runs / "1_expert")["curve"]
    for a, b in zip(_leaves(rl_runs / "1_expert"), _leaves(out)):
        np.testing.assert_array_equal(a, b)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events == [{"event": "start_from", "run": str(rl_runs / "grow"), "iteration": 4}]
    # refused, one line each: another computation, a source without a snapshot, its own directory
    assert main(["rl", "rl/minatar_1_expert.yaml", "--out", str(tmp_path / "x"), "--start-from",
                 str(rl_runs / "grow"), *_sets(["net.hidden=8"])]) == 2
    assert "net.hidden differ" in capsys.readouterr().err
    assert main(["rl", "rl/minatar_1_expert.yaml", "--out", str(tmp_path / "y"), "--start-from",
                 str(rl_runs / "1_expert"), *_sets()]) == 2
    assert "has no snapshot" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_compare_writes_fig3_and_table(rl_runs, tmp_path, capsys):
    assert main(["rl", "--compare", str(rl_runs), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "table.md").read_text()
    for label in VARIANTS.values():
        assert f"| {label} | 1 |" in table
    assert "| 1-to-2 grow − 1 expert (paired by seed) |" in table and "| 2 experts | critic.block0 |" in table
    for name in ("learning_curves.png", "compare.json"):
        assert (tmp_path / "cmp" / name).stat().st_size > 1000
    # the tiny agents' greedy episodes stay in stage 0: no specialisation to draw (tests/rl/test_rl_compare.py draws it)
    assert not (tmp_path / "cmp" / "specialisation.png").exists()


@pytest.mark.slow
def test_mtil_plot_draws_fig4_of_an_rl_run(rl_runs, tmp_path, capsys):
    assert main(["plot", str(rl_runs / "grow"), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "router_trace.png").stat().st_size > 1000


@pytest.mark.slow
def test_errors_are_one_line(rl_runs, tmp_path, capsys):
    assert main(["rl", "rl/minatar_grow.yaml", "--out", str(rl_runs / "grow"), *_sets()]) == 2
    assert "already holds an RL run" in capsys.readouterr().err
    assert main(["rl", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert main(["rl", "rl/minatar_grow.yaml", "--set", "moe.experts_end=0"]) == 2
    assert main(["rl", "rl/minatar_grow.yaml", "--set", "ppo.minibatches=7"]) == 2
    assert main(["rl", "--compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("mtil: error:") == 4 and "Traceback" not in err


# one iteration of 8 envs x 8 steps: the single growth falls before it (grow_at [0]), so only the grown network's
# iteration is compiled; XLA compiling Craftax's step and world generation is nearly all of the ~4 CPU-minutes
CRAFTAX = ["env.name=Craftax-Symbolic-v1", "net.torso=flat", "net.hidden=16", "ppo.num_envs=8", "ppo.num_steps=8",
           "ppo.total_steps=64", "ppo.minibatches=2", "ppo.epochs=1", "env.reset_ratio=4", "train.log_every=1",
           "trace.episodes=1", "trace.max_steps=40", "specialisation.episodes=2", "specialisation.max_steps=40",
           "specialisation.random_routers=2"]


@pytest.mark.slow
def test_craftax_symbolic_grow_run_end_to_end(tmp_path, monkeypatch):
    """The paper's environment path without a GPU: a Craftax-Symbolic grow run with its growth event, the
    player_level stage in the trace and the specialisation statistic, and its figures."""
    monkeypatch.setenv("MTIL_JAX_CACHE", str(tmp_path / "xla-cache"))
    out = tmp_path / "craftax"
    assert main(["rl", "rl/craftax_grow.yaml", "--out", str(out), *[a for kv in CRAFTAX for a in ("--set", kv)]]) == 0
    r = _results(out)
    assert r["complete"] and r["env"] == "Craftax-Symbolic-v1" and r["variant"] == "grow" and r["experts"] == 2
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events == [{"event": "grow", "iteration": 0, "steps": 0, "experts_from": 1, "experts_to": 2, "blocks": 3}]
    point = r["curve"][-1]
    assert point["experts"] == 2 and len(point["router"]["critic.block0"]) == 2
    assert "collect_wood" in point["achievement_rates"]                      # Craftax's achievements are logged
    trace = json.loads((out / "trace.json").read_text())
    assert trace["length"] == len(trace["stage"]) > 0 and set(trace["stage"]) <= set(range(10))   # player_level
    assert np.array(trace["router"]).shape == (trace["length"], 2)
    spec = json.loads((out / "specialisation.json").read_text())
    assert spec["episodes"] == 2 and spec["blocks"]["critic.block0"]["experts"] == 2
    assert {p.name for p in (out / "figures").iterdir()} == {
        "learning_curve.png", "learning_curve.svg", "router_trace.png", "router_trace.svg"}
