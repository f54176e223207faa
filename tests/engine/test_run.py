"""The MTIL harness end to end on the tiny synthetic stream: outputs, metrics, resume, bad inputs."""
import json
import shutil

import numpy as np
import pytest

from mtil import metrics
from mtil.cli import main
from mtil.errors import MtilError
from mtil.model.usage import UsageTracker

from conftest import Interrupt, interrupt_at_row


def results(out):
    return json.loads((out / "results.json").read_text())


def test_metrics_equal_the_formulas_on_a_hand_made_matrix():
    a = np.array([[80.0, 10.0, 20.0, 30.0],
                  [70.0, 90.0, 25.0, 35.0],
                  [60.0, 85.0, 95.0, 40.0],
                  [50.0, 80.0, 90.0, 99.0]])
    s = metrics.summarize(a, ["A", "B", "C", "D"])
    assert s["transfer"] == pytest.approx(np.mean([10.0, (20 + 25) / 2, (30 + 35 + 40) / 3]))
    assert s["avg"] == pytest.approx(a.mean())
    assert s["last"] == pytest.approx((50 + 80 + 90 + 99) / 4)
    assert s["bwt"] == pytest.approx(((50 - 80) + (80 - 90) + (90 - 95)) / 3)
    assert s["forgetting"] == pytest.approx(((80 - 50) + (90 - 80) + (95 - 90)) / 3)
    assert s["per_dataset"]["C"] == {"transfer": pytest.approx(22.5), "avg": pytest.approx(a[:, 2].mean()), "last": 90.0}
    assert s["per_dataset"]["A"]["transfer"] is None


def test_run_writes_matrix_metrics_and_outputs(tiny_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *tiny_args, "--set=policy.name=merge", "--out", str(out)]) == 0
    r = results(out)
    assert r["tasks"] == ["Red", "Green", "Blue"] and r["complete"]
    m = np.array(r["matrix"])
    assert m.shape == (3, 3) and ((m >= 0) & (m <= 100)).all()
    s = metrics.summarize(m, r["tasks"])
    for key in ("transfer", "avg", "last", "bwt", "forgetting"):
        assert r[key] == pytest.approx(s[key])
    assert len(r["selector_accuracy"]) == 3 and all(0 <= x <= 100 for x in r["selector_accuracy"])
    assert [p["task"] for p in r["params"]] == ["Red", "Green", "Blue"]
    assert r["versions"]["torch"] and r["seed"] == 42
    usage = np.load(out / "usage.npz")
    assert usage["image_usage"].shape == (3, 3, 6) and usage["text_usage"].shape == (3, 3, 6)
    # each task: 6 updates + the reference's final lr-0 iteration (train.final_step) x batch 8 x top-2 per layer
    assert (usage["image_usage"].sum(axis=2) == (6 + 1) * 8 * 2).all()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["action"] for e in events} >= {"merge", "freeze"}
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "last.pt").exists()
    printed = capsys.readouterr().out
    assert "Transfer" in printed and f"{r['last']:.2f}" in printed


def test_same_seed_same_matrix(tiny_args, tmp_path):
    for name in ("a", "b"):
        assert main(["run", *tiny_args, "--set=policy.name=freeze", "--out", str(tmp_path / name)]) == 0
    assert results(tmp_path / "a")["matrix"] == results(tmp_path / "b")["matrix"]


@pytest.mark.parametrize("where,policy", [("during-eval", "merge"), ("mid-task", "grow")])
def test_resume_equals_uninterrupted(tiny_args, tmp_path, monkeypatch, where, policy):
    """(Every policy's mid-task resume is in test_policies' contract test.)"""
    args = [*tiny_args, f"--set=policy.name={policy}", "--set=train.checkpoint_every=2",
            "--set=policy.grow.granularity=2", "--set=policy.grow.every=0"]
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    full = results(tmp_path / "full")

    if where == "mid-task":
        original = UsageTracker.snapshot_router

        def snapshot_router(self, step):
            if step == 10:  # task 2, step 4, before its checkpoint: the last checkpoint is task 2, step 2
                raise Interrupt
            original(self, step)
        monkeypatch.setattr(UsageTracker, "snapshot_router", snapshot_router)
    else:
        interrupt_at_row(monkeypatch, 2)

    with pytest.raises(Interrupt):
        main(["run", *args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    partial = results(tmp_path / "cut")
    assert len(partial["matrix"]) == 1 and not partial["complete"]
    assert main(["run", *args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    resumed = results(tmp_path / "cut")
    assert resumed["matrix"] == full["matrix"]
    assert resumed["params"] == full["params"]
    assert (tmp_path / "cut" / "events.jsonl").read_text() == (tmp_path / "full" / "events.jsonl").read_text()


def test_oracle_and_zero_shot_modes(tiny_args, tmp_path):
    assert main(["run", *tiny_args, "--set=eval.mode=zero-shot", "--out", str(tmp_path / "zs")]) == 0
    zs = results(tmp_path / "zs")
    assert all(row == zs["matrix"][0] for row in zs["matrix"])  # zero-shot CLIP never changes
    assert zs["selector_accuracy"] == [None, None, None]
    assert main(["run", *tiny_args, "--set=eval.mode=oracle", "--out", str(tmp_path / "or")]) == 0
    oracle = results(tmp_path / "or")["matrix"]
    for i in range(3):
        for j in range(i + 1, 3):
            assert oracle[i][j] == zs["matrix"][0][j]  # not-yet-learned tasks are answered by zero-shot CLIP


# ---- bad input: one clear line, exit 2, nothing already written lost --------------------------------------------

def run_error(args, capsys):
    code = main(["run", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mtil: error: "), err
    return err[0]


def test_data_root_missing(tiny_args, tmp_path, capsys):
    line = run_error([*tiny_args, f"--set=data.root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o")], capsys)
    assert "nowhere" in line


def test_dataset_not_prepared_names_the_command(tiny_args, tmp_path, capsys):
    line = run_error([*tiny_args, "--set=data.order=[Red,Purple]", "--out", str(tmp_path / "o")], capsys)
    assert "mtil prepare" in line and "Purple" in line


def test_unknown_key_and_wrong_type(tiny_args, tmp_path, capsys):
    line = run_error([*tiny_args, "--set=train.lrr=1", "--out", str(tmp_path / "o")], capsys)
    assert "train.lrr" in line and "iterations" in line
    line = run_error([*tiny_args, "--set=train.iterations=many", "--out", str(tmp_path / "o")], capsys)
    assert "train.iterations" in line


def test_unknown_model_policy_tower_and_pretrained_file(tiny_args, tmp_path, capsys):
    assert "unknown model" in run_error([*tiny_args, "--set=model.name=ViT-Q-99", "--out", str(tmp_path / "a")], capsys)
    assert "'policy.name' = 'prune'" in run_error([*tiny_args, "--set=policy.name=prune", "--out", str(tmp_path / "b")], capsys)
    assert "'moe.towers' = ['audio']" in run_error([*tiny_args, "--set=moe.towers=[audio]", "--out", str(tmp_path / "c")], capsys)
    line = run_error([*tiny_args, f"--set=model.pretrained={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "d")], capsys)
    assert "missing.pt" in line


def test_class_count_mismatch(tiny_args, stream_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(stream_root, root)
    from mtil.data import registry
    registry.register(registry.DatasetInfo("Red", ["a", "b"], ["{}"]))
    try:
        line = run_error([*tiny_args, f"--set=data.root={root}", "--out", str(tmp_path / "o")], capsys)
    finally:
        registry.unregister("Red")
    assert "2" in line and "3" in line


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    assert main(["run", *tiny_args, "--set=data.order=[Red,Green]", "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    # continue the finished 2-task run as a 3-task run would differ in config; instead poison the next run's loss
    out2 = tmp_path / "o2"
    line = run_error([*tiny_args, "--set=train.lr_per_task.Green=1e30", "--set=train.warmup_steps=0",
                      "--out", str(out2)], capsys)
    assert "loss became" in line and "Green" in line
    assert len(results(out2)["matrix"]) == 1  # task Red's row and checkpoint survive
    assert (out / "results.json").read_bytes() == before


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tiny_args, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert "already holds a run" in run_error([*tiny_args, "--out", str(out)], capsys)
    assert (out / "results.json").read_text() == "{}"
    assert "no checkpoint" in run_error([*tiny_args, "--out", str(tmp_path / "empty"), "--resume"], capsys)


def test_resume_with_incompatible_config(tiny_args, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", *tiny_args, "--set=data.order=[Red]", "--out", str(out)]) == 0
    line = run_error([*tiny_args, "--set=data.order=[Red]", "--set=moe.num_experts=4", "--out", str(out), "--resume"], capsys)
    assert "moe.num_experts" in line


def test_run_reads_config_only_demo_assets_resolve_before_it(tmp_path, monkeypatch):
    from mtil import config
    from mtil.demo import pretrain
    from mtil.engine.run import Run
    from mtil.errors import MtilError
    plain = config.load(None, [])
    before = config.unwrap(plain)
    pretrain.resolve_demo_assets(plain)   # a non-demo config is left as it is
    assert config.unwrap(plain) == before
    demo = config.load("demo.yaml", [])
    with pytest.raises(MtilError, match="resolve_demo_assets"):
        Run(demo, tmp_path / "d")         # unresolved: one clear line, before anything is written
    assert not (tmp_path / "d").exists()
    calls = []
    monkeypatch.setenv("MTIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrain, "ensure_demo_assets",
                        lambda cache, section, seed: calls.append((cache, seed)) or (cache / "data", cache / "b.pt"))
    pretrain.resolve_demo_assets(demo)
    assert calls == [(tmp_path / "cache", demo.demo.seed)]
    assert (demo.data.root, demo.model.pretrained) == (str(tmp_path / "cache" / "data"), str(tmp_path / "cache" / "b.pt"))


@pytest.mark.parametrize("shipped", ["mtil_order1.yaml", "mtil_order2_fewshot.yaml", "baselines/order1.yaml"])
def test_a_shipped_config_runs_any_subset_with_each_tasks_published_lr(shipped):
    """The shipped per-task lr tables name all 11 datasets; a subset (any order, aliases too) keeps each task's lr,
    and a name that is no registered dataset is still refused."""
    from mtil import methods
    from mtil.config import load
    cfg = load(shipped, ["data.order=[MNIST,Cars,Aircraft]"])
    moe = methods.METHODS.get("moe").obj.from_config(cfg)
    table = {k: v for k, v in cfg.train.lr_per_task.items()}
    assert moe.lr_of("MNIST") == table["MNIST"] and moe.lr_of("Cars") == table["StanfordCars"]
    with pytest.raises(MtilError, match="'train.lr_per_task' names Mnistt, neither in data.order nor a registered"):
        load(shipped, ["data.order=[MNIST,EuroSAT]", "train.lr_per_task.Mnistt=1e-3"])


def test_a_nan_resume_ignores_the_lr_keys_of_tasks_not_started_however_the_table_spells_them():
    from mtil.engine.run import _lr_keys_of
    rec = {"config": {"train": {"lr_per_task": {"Cars": 1e-3, "MNIST": 1e-4}},
                      "method": {"finetune": {"lr_per_task": {"stanford-cars": 5e-5}}}}}
    assert _lr_keys_of(["StanfordCars"], rec) == ["method.finetune.lr_per_task.stanford-cars",
                                                  "train.lr_per_task.Cars"]
