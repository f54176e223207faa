"""Every method end to end on the tiny stream: what trains (backbone or adapters), WiSE-FT's interpolation, ZSCL's
weight ensemble, iCaRL's memory, and exact resume after a kill between tasks and inside a task."""
import json

import pytest
import torch

from mtil import config
from mtil.cli import main
from mtil.engine.run import Run
from mtil.methods import METHODS
from mtil.methods import build as build_method
from mtil.methods.wiseft import WiSEFT
from mtil.methods.zscl import ZSCL

from conftest import Interrupt, interrupt_at_row
from method_helpers import method_root  # noqa: F401 (fixture)

BASELINES = ("finetune", "lwf", "icarl", "wiseft", "zscl")


def overrides(root, *extra) -> list[str]:
    from conftest import TINY_OVERRIDES
    return [*TINY_OVERRIDES, f"data.root={root}", "data.order=[Red,Green]", "method.finetune.lr=1e-3",
            "method.icarl.memory=12", "method.zscl.avg_freq=2", *extra]


def cli(root, *extra) -> list[str]:
    return [f"--set={o}" for o in overrides(root, *extra)]


def run_in_process(root, out, *extra) -> Run:
    return Run(config.load(None, overrides(root, *extra)), out)


def backbone_weights(run: Run) -> dict[str, torch.Tensor]:
    """The CLIP's own tensors (the adapters registered inside its blocks left out)."""
    return {k: v.detach().clone() for k, v in run.backbone.model.state_dict().items() if ".moe." not in k}


def test_full_finetuning_moves_the_backbone_and_moe_leaves_it_bit_identical(method_root, tmp_path):
    moe = run_in_process(method_root, tmp_path / "moe", "method.name=moe", "policy.name=merge")
    before = backbone_weights(moe)
    moe.execute()
    after = backbone_weights(moe)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(bool(v.abs().sum() > 0) for k, v in moe.adapted.adapter_state_dict().items() if k.endswith("w_up"))

    ft = run_in_process(method_root, tmp_path / "ft", "method.name=finetune")
    before = backbone_weights(ft)
    ft.execute()
    after = backbone_weights(ft)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trained = {n for n, _ in ft.backbone.model.named_parameters()} - {"logit_scale"}
    assert changed == trained                                  # every trained tensor moved, the logit scale did not
    r = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert r["method"] == "finetune" and r["policy"] is None and r["eval_mode"] == "whole-model"
    assert [p["trainable"] for p in r["params"]] == [sum(p.numel() for n, p in ft.backbone.model.named_parameters()
                                                         if n in trained)] * 2
    assert len(r["train_seconds"]) == 2 and not (tmp_path / "ft" / "usage.npz").exists()


def test_wiseft_result_is_exactly_the_interpolation(method_root, tmp_path, monkeypatch):
    seen = []
    original = WiSEFT.end_task

    def end_task(self, ctx):
        tuned = self.weights()
        original(self, ctx)
        seen.append((dict(self.start), tuned, self.weights()))
    monkeypatch.setattr(WiSEFT, "end_task", end_task)
    run = run_in_process(method_root, tmp_path / "w", "method.name=wiseft")
    run.execute()
    assert len(seen) == 2
    for start, tuned, result in seen:
        for n, w in result.items():
            assert torch.equal(w, tuned[n] * 0.8 + start[n] * (1 - 0.8)), n
    assert all(torch.equal(seen[1][0][n], w) for n, w in seen[0][2].items())   # task 2 starts from task 1's result
    final = torch.load(tmp_path / "w" / "checkpoints" / "last.pt", weights_only=False)["method"]["weights"]
    assert all(torch.equal(final[n], w) for n, w in seen[1][2].items())


def test_zscl_result_is_exactly_the_running_average_of_its_snapshots(method_root, tmp_path, monkeypatch):
    steps = {}
    original_after, original_end = ZSCL.after_step, ZSCL.end_task

    def after_step(self, ctx):
        if ctx.step == 1:
            steps[(ctx.task, 0)] = dict(self.start)
        steps[(ctx.task, ctx.step)] = self.weights()
        original_after(self, ctx)

    def end_task(self, ctx):
        steps[(ctx.task, "before")] = self.weights()
        original_end(self, ctx)
        steps[(ctx.task, "after")] = self.weights()
    monkeypatch.setattr(ZSCL, "after_step", after_step)
    monkeypatch.setattr(ZSCL, "end_task", end_task)
    run = run_in_process(method_root, tmp_path / "z", "method.name=zscl")   # 6 iterations, avg_freq 2
    run.execute()
    for task in (0, 1):
        # the final lr-0 iteration (train.final_step) moved no weight
        assert all(torch.equal(steps[(task, "before")][n], w) for n, w in steps[(task, 6)].items())
        # merge_we after iterations 0, 2, 4 (updates 1, 3, 5) and the reference's last iteration 6
        snapshots = [steps[(task, s)] for s in (0, 1, 3, 5, 6)]
        for n, w in steps[(task, "after")].items():
            running = snapshots[0][n].clone()
            for count, snap in enumerate(snapshots[1:], start=1):
                running = (running * count + snap[n]) / (1.0 + count)
            assert torch.equal(w, running), (task, n)
    assert all(torch.equal(steps[(1, 0)][n], w) for n, w in steps[(0, "after")].items())   # the next task's start


@pytest.mark.parametrize("selection,per_task", [
    ("per_class", [[4, 4, 4], [2, 2, 2, 2, 2, 2], [1] * 9]),          # K // classes seen, per class
    ("reference", [[12], [6, 6], [4, 4, 8]]),                          # K // t per earlier set, K - K // t new
])
def test_icarl_memory_holds_the_configured_exemplars(method_root, tmp_path, selection, per_task):
    out = tmp_path / selection
    assert main(["run", *cli(method_root, "method.name=icarl", f"method.icarl.selection={selection}",
                             "data.order=[Red,Green,Blue]"), "--out", str(out)]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    memory = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["method"]["memory"]
    assert [e["action"] for e in events] == ["icarl-memory"] * 3
    assert [len(g) for groups in memory.values() for g in groups] == per_task[-1]
    assert [sum(e["sizes"].values()) for e in events] == [sum(sizes) for sizes in per_task]
    if selection == "per_class":
        from mtil.data import pipeline
        cfg = config.load(None, overrides(method_root, "data.order=[Red,Green,Blue]"))
        for name, groups in memory.items():
            labels = pipeline.load_task(cfg.data, name, 42).train["label"]
            assert [[labels[r] for r in g] for g in groups] == [[0], [1], [2]]   # each class its own exemplar


@pytest.mark.parametrize("name", ["zero-shot", *BASELINES])
def test_resume_after_a_kill_between_tasks_and_inside_a_task_is_exact(name, method_root, tmp_path, monkeypatch):
    args = [*cli(method_root, f"method.name={name}", "train.checkpoint_every=2")]
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    cut = str(tmp_path / "cut")

    interrupt_at_row(monkeypatch, 1)        # between tasks: while task 1's row is evaluated
    with pytest.raises(Interrupt):
        main(["run", *args, "--out", cut])
    monkeypatch.undo()
    if name != "zero-shot":                 # inside task 2: after step 3 (its last checkpoint is at step 2)
        cls = METHODS.get(name).obj
        original_after = cls.after_step

        def after_step(self, ctx):
            if ctx.task == 1 and ctx.step == 3:
                raise Interrupt
            original_after(self, ctx)
        monkeypatch.setattr(cls, "after_step", after_step)
        with pytest.raises(Interrupt):
            main(["run", *args, "--out", cut, "--resume"])
        monkeypatch.undo()
        progress = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)["progress"]
        assert progress == {"task": 1, "phase": "train", "step": 2, "global_step": 8}
    assert main(["run", *args, "--out", cut, "--resume"]) == 0
    full, resumed = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("full", "cut"))
    assert resumed["matrix"] == full["matrix"] and resumed["params"] == full["params"]
    states = [torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)["method"] for d in ("full", "cut")]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        a, b = states[0][key], states[1][key]
        if isinstance(a, dict) and a and torch.is_tensor(next(iter(a.values()))):
            assert all(torch.equal(a[k], b[k]) for k in a), key
        else:
            assert a == b, key
    assert (tmp_path / "cut" / "events.jsonl").read_text() == (tmp_path / "full" / "events.jsonl").read_text()


@pytest.fixture()
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision state per process: a bf16 run after fp32 runs needs a reset."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_full_finetuning_runs_in_bf16_with_gradient_checkpointing(method_root, tmp_path, fresh_accelerate_state):
    out = tmp_path / "bf16"
    assert main(["run", *cli(method_root, "method.name=zscl", "model.precision=bf16",
                             "method.finetune.grad_checkpointing=true", "data.order=[Red]"), "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] and all(0 <= a <= 100 for a in r["matrix"][0])


@pytest.mark.parametrize("argv,expected", [
    (["run", "--set=method.name=ewc"], "'method.name' = 'ewc' is not allowed"),
    (["run", "--set=method.finetune.lr_per_task.Carz=1e-4"], "'method.finetune.lr_per_task' names Carz"),
    (["run", "--set=method.wiseft.alpha=1.5"], "'method.wiseft.alpha' = 1.5"),
    (["compare", "--methods", "finetune,ewc"], "unknown method ewc"),
])
def test_bad_method_inputs_are_one_line(argv, expected, method_root, tmp_path, capsys):
    assert main([*argv, *cli(method_root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtil: error: ") and expected in err[0], err
    assert not (tmp_path / "o").exists()


def test_the_baselines_lr_table_may_name_registered_datasets_outside_the_order(method_root):
    """ZSCL's table (Aircraft and MNIST 5e-5) serves every order and sub-order; a name that is no dataset is an error."""
    cfg = config.load(None, overrides(method_root, "method.name=finetune",
                                      "method.finetune.lr_per_task={Aircraft: 5.0e-5, Red: 2.0e-4}"))
    method = build_method(cfg)
    assert method.lr_of("Red") == 2e-4 and method.lr_of("Green") == 1e-3
    assert method.lr_key("Red") == "method.finetune.lr_per_task.Red"


@pytest.mark.parametrize("method", ["finetune", "moe"])
def test_a_finished_tasks_optimizer_is_released(method_root, tmp_path, method):
    """accelerate keeps every optimizer it prepared; a task's optimizer (full fine-tuning of ViT-B/16: 1.2 GB of
    AdamW moments) must not outlive its task, or memory grows by one optimizer per task."""
    import gc
    import weakref
    seen = []
    original = torch.optim.Optimizer.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(weakref.ref(self))
    run = run_in_process(method_root, tmp_path / method, f"method.name={method}", "policy.name=freeze")
    try:
        torch.optim.Optimizer.__init__ = remember
        run.execute()
    finally:
        torch.optim.Optimizer.__init__ = original
    gc.collect()
    assert len(seen) >= 2 and len([r for r in seen if r() is not None]) <= 1   # at most the last task's
    assert not run.accelerator._optimizers
