"""The study driver (`python -m mtil.rl.study`): which runs it plans, in which order, with which command line."""
import json

from mtil.rl import study


def test_plan_orders_the_grid_and_starts_each_1_expert_run_from_its_grow_run(tmp_path):
    jobs = study.plan("rl/minatar", ["no_moe", "1_expert", "grow"], [0, 3], tmp_path, ["net.hidden=8"])
    assert [j["name"] for j in jobs] == ["grow_s0", "1_expert_s0", "no_moe_s0", "grow_s3", "1_expert_s3", "no_moe_s3"]
    one = jobs[1]
    assert one["after"] == tmp_path / "grow_s0" and jobs[0]["after"] is None
    assert one["cmd"][2:] == ["mtil", "rl", "rl/minatar_1_expert.yaml", "--out", str(tmp_path / "1_expert_s0"),
                              "--set", "net.hidden=8", "--set", "seed=0"]
    assert study.command(one)[-2:] == ["--start-from", str(tmp_path / "grow_s0")]
    # without its grow run in the grid a 1-expert run starts from scratch
    alone = study.plan("rl/minatar", ["1_expert"], [1], tmp_path, [])
    assert alone[0]["after"] is None and "--start-from" not in study.command(alone[0])


def test_runs_are_skipped_when_done_and_resumed_when_stopped(tmp_path):
    job = study.plan("rl/minatar", ["grow"], [0], tmp_path, [])[0]
    assert study.run_state(job["run"]) == "new"
    job["run"].mkdir()
    (job["run"] / "checkpoint.npz").write_bytes(b"")
    (job["run"] / "results.json").write_text(json.dumps({"complete": False}))
    assert study.run_state(job["run"]) == "stopped"
    assert study.command(job)[2:] == ["mtil", "rl", "--out", str(job["run"]), "--resume"]
    (job["run"] / "results.json").write_text(json.dumps({"complete": True}))
    assert study.run_state(job["run"]) == "done"
    assert study.execute([job], tmp_path, 2) == 0 and not (tmp_path / "cpu_times.jsonl").exists()
