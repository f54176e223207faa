"""Expert lifecycle policies: one contract for every registered policy, then freeze / merge / grow specifics."""
import copy
import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtil import config, policies
from mtil.cli import main
from mtil.engine import optimizer as optim
from mtil.engine.slice_guard import SliceGuard
from mtil.model import backbone, moe
from mtil.model.usage import UsageTracker
from mtil.policies import TrainContext

from conftest import Interrupt
from merge_helpers import merge_setup


def resets(opt):
    """What the training loop wires into TrainContext: a changed slot restarts its optimizer state."""
    return functools.partial(optim.reset_state, opt)

def results(out):
    return json.loads((out / "results.json").read_text())


def adapters(out):
    return torch.load(out / "checkpoints" / "last.pt", weights_only=False)["adapters"]


@pytest.mark.parametrize("name", sorted(policies.POLICIES))
def test_contract_three_tasks_checkpoint_round_trip_and_exact_resume(name, tiny_args, tmp_path, monkeypatch):
    args = [*tiny_args, f"--set=policy.name={name}", "--set=train.checkpoint_every=2"]
    assert main(["run", *args, "--out", str(tmp_path / "full")]) == 0
    full = results(tmp_path / "full")
    assert full["complete"] and len(full["matrix"]) == 3
    assert [p["task"] for p in full["params"]] == full["tasks"]
    assert all(p["active_experts"] > 0 and 0 < p["per_sample"] <= p["active_experts"] for p in full["params"])
    if name == "grow":  # each task's router was closed on the experts active at its end (g = 2 per task)
        closed = adapters(tmp_path / "full")["image.0.router_experts"]
        assert closed.sum(1).tolist() == [2, 4, 6] and closed[0, :2].all()

    original = UsageTracker.snapshot_router

    def snapshot_router(self, step):
        if step == 16:  # task 3, step 4: resumes from the task-3 step-2 checkpoint
            raise Interrupt
        original(self, step)
    monkeypatch.setattr(UsageTracker, "snapshot_router", snapshot_router)
    with pytest.raises(Interrupt):
        main(["run", *args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"] == {"task": 2, "phase": "train", "step": 2, "global_step": 14}
    events = state["method"]["policy"]["events"]
    assert events == [e for e in events if e["step"] <= 14]
    assert main(["run", *args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert results(tmp_path / "cut")["matrix"] == full["matrix"]
    for k, v in adapters(tmp_path / "full").items():
        assert torch.equal(adapters(tmp_path / "cut")[k], v), k


def test_freeze_topk_after_task_one_and_bit_identical_to_the_end(tiny_args, tmp_path):
    args = [*tiny_args, "--set=policy.name=freeze"]
    assert main(["run", *args, "--set=data.order=[Red]", "--out", str(tmp_path / "one")]) == 0
    assert main(["run", *args, "--out", str(tmp_path / "three")]) == 0
    one, three = adapters(tmp_path / "one"), adapters(tmp_path / "three")
    usage = np.load(tmp_path / "one" / "usage.npz")
    for tower in ("image", "text"):
        for b, counts in zip(usage[f"{tower}_blocks"], usage[f"{tower}_usage"][0]):
            frozen = one[f"{tower}.{b}.frozen"]
            assert int(frozen.sum()) == 2  # top_k = 2
            top2 = set(np.argsort(-counts, kind="stable")[:2].tolist())
            assert set(frozen.nonzero().flatten().tolist()) == top2
            for p in ("w_down", "b_down", "w_up", "b_up"):
                key = f"{tower}.{b}.{p}"
                assert torch.equal(three[key][frozen], one[key][frozen]), key
            assert three[f"{tower}.{b}.frozen"][frozen].all()


@pytest.fixture(scope="module")
def clip():
    return backbone.load("mtil-tiny", None)


def test_merge_writes_the_average_into_the_least_used_free_slot(clip):
    cfg, model, tracker, policy = merge_setup(clip.model)
    opt = optim.build_optimizer(model, 1e-3, 0.0)
    images = torch.randn(4, 3, 32, 32)
    model.train()
    model.encode_image(images, 0).sum().backward()
    opt.step()  # every slot has optimizer moments now
    layer = model.layers[0]
    layer.frozen[4] = True
    layer.window_counts[:] = torch.tensor([5, 40, 3, 30, 0, 1])  # a=1, b=3; slot 4 is frozen, so c=5
    before = [t.detach().clone() for t in layer.expert_tensors()]
    ctx = TrainContext(task=0, task_name="Red", step=10, global_step=10, on_slot_change=resets(opt))
    policy.after_step(ctx)
    for t, b in zip(layer.expert_tensors(), before):
        assert torch.equal(t.detach()[5], (b[1] + b[3]) / 2)
        assert torch.equal(t.detach()[4], b[4])  # frozen slot untouched
        for e in (0, 1, 2, 3):
            assert torch.equal(t.detach()[e], b[e])
        state = opt.state[t]
        assert float(state["exp_avg"][5].abs().sum()) == 0 and float(state["exp_avg_sq"][5].abs().sum()) == 0
        assert float(state["exp_avg"][0].abs().sum()) > 0
    event = [e for e in policy.events if e["block"] == layer.block and e["tower"] == "image"][0]
    assert event["action"] == "merge" and event["experts"] == [1, 3, 5] and event["step"] == 10
    assert int(layer.window_counts.sum()) == 0  # the window restarted


def test_merge_waits_for_warmup_and_period_and_skips_without_a_free_slot(clip):
    cfg, model, tracker, policy = merge_setup(clip.model)
    layer = model.layers[0]
    layer.window_counts[:] = torch.tensor([5, 40, 3, 30, 0, 1])
    before = layer.w_up.detach().clone()
    for step in (5, 15):  # before warm-up; not a multiple of the period
        policy.after_step(TrainContext(0, "Red", step, step))
    assert torch.equal(layer.w_up.detach(), before) and not policy.events
    layer.frozen[[0, 2, 4, 5]] = True
    policy.after_step(TrainContext(0, "Red", 20, 20))
    assert torch.equal(layer.w_up.detach(), before)
    assert policy.events[0]["action"] == "merge-skipped" and "no eligible" in policy.events[0]["reason"]


@pytest.mark.parametrize("last_step", ["skip", "merge"])
def test_a_merge_due_on_the_last_step_of_a_task(clip, last_step):
    """Default skip: the merged expert would otherwise be frozen / evaluated without one training step."""
    cfg, model, tracker, policy = merge_setup(clip.model, last_step=last_step)
    layer = model.layers[0]
    layer.window_counts[:] = torch.tensor([5, 40, 3, 30, 0, 1])
    before = layer.w_up.detach().clone()
    last = cfg.train.iterations
    policy.after_step(TrainContext(0, "Red", last, last))
    actions = {e["action"] for e in policy.events}
    if last_step == "skip":
        assert torch.equal(layer.w_up.detach(), before)
        assert policy.events == [dict(policy.events[0], action="merge-skipped", tower=None, experts=[])]
        assert "last step" in policy.events[0]["reason"] and policy.events[0]["step"] == last
    else:
        assert "merge" in actions and torch.equal(layer.w_up.detach()[4], (before[1] + before[3]) / 2)  # c = 4


def test_merge_copy_router_and_frozen_sources_options(clip):
    cfg, model, tracker, policy = merge_setup(clip.model, copy_router="true", frozen_sources="false")
    layer = model.layers[0]
    with torch.no_grad():
        layer.router.normal_()
    layer.frozen[1] = True  # the most used expert may not be a source now
    layer.window_counts[:] = torch.tensor([5, 40, 3, 30, 0, 1])
    router = layer.router.detach().clone()
    w = layer.w_down.detach().clone()
    policy.after_step(TrainContext(1, "Green", 10, 10))
    assert policy.events[0]["experts"] == [3, 0, 4]  # a=3, b=0 (1 is frozen), c=4 (least used free slot)
    assert torch.equal(layer.w_down.detach()[4], (w[3] + w[0]) / 2)
    assert torch.equal(layer.router.detach()[1, :, 4], (router[1, :, 3] + router[1, :, 0]) / 2)
    assert torch.equal(layer.router.detach()[0], router[0])  # task 1's merge leaves task 0's router alone


def grow_model(clip_model, g, tasks=4, hidden=16, top_k=1, **grow):
    cfg = config.load(None, ["policy.name=grow", f"policy.grow.granularity={g}", f"moe.hidden={hidden}", f"moe.top_k={top_k}",
                             f"data.order=[{','.join(f't{i}' for i in range(tasks))}]"]
                      + [f"policy.grow.{k}={v}" for k, v in grow.items()])
    kwargs = dict(top_k=1, hidden=hidden, num_routers=tasks)
    policy = policies.build(cfg)
    kwargs.update(policy.adapter_overrides())
    torch.manual_seed(0)
    model = moe.attach(copy.deepcopy(clip_model), **kwargs)
    return model, policy.attach(model, UsageTracker(model))


def test_grow_raises_active_experts_and_params_at_each_growth_point(clip):
    model, policy = grow_model(clip.model, g=2)
    layer = model.layers[0]
    assert layer.num_experts == 8 and layer.top_k == 2  # g x tasks slots; top_k x g
    # DynamicMoE's width from the final count: 8 experts within the budget of 4 experts of width 16 (d = 128)
    assert layer.hidden == (4 * (16 * 257 + 128) - 8 * 128) // (8 * 257) == 7
    per_expert = layer.expert_numel() + 2 * layer.dim  # expert + one router and one noise column
    counts = [model.param_counts()["active"]]
    for t in range(1, 4):
        opt = optim.build_optimizer(model, 1e-2, 0.0)
        model.close_router(t - 1)
        policy.begin_task(TrainContext(t, f"task{t}", 0, t * 10, resets(opt)))
        assert all(int(layer.active.sum()) == 2 * (t + 1) for layer in model.layers)
        counts.append(model.param_counts()["active"])
        assert counts[-1] - counts[-2] == len(model.layers) * 2 * per_expert
    events = [e for e in policy.events if e["action"] == "grow"]
    assert len(events) == 3 * len(model.layers) and events[0]["experts"] == [2, 3]


def test_a_step_based_growth_due_on_the_last_step_of_a_task_is_skipped(clip):
    """As merge's: grown experts would be evaluated without one training step. The sizing counts only the growths
    that happen (iterations 1000, every 500: growths at steps 500 of each of 4 tasks, not at their ends)."""
    model, policy = grow_model(clip.model, g=1, every=500)
    assert policy.stages() == 1 + 4 and model.layers[0].num_experts == 5
    opt = optim.build_optimizer(model, 1e-2, 0.0)
    layer = model.layers[0]
    policy.after_step(TrainContext(0, "t0", 1000, 1000, resets(opt)))          # task 1's last step: skipped
    assert int(layer.active.sum()) == 1
    assert policy.events == [dict(policy.events[0], action="grow-skipped", experts=[], tower=None)]
    assert "last step" in policy.events[0]["reason"]
    policy.after_step(TrainContext(1, "t1", 500, 1500, resets(opt)))           # mid-task: grows
    assert int(layer.active.sum()) == 2 and policy.events[-1]["action"] == "grow"


def test_new_experts_train_on_the_next_step(clip):
    model, policy = grow_model(clip.model, g=1, top_k=2)  # both active experts run for every sample
    opt = optim.build_optimizer(model, 1e-2, 0.0)
    guard = SliceGuard(model, opt, router=1)
    model.close_router(0)
    policy.begin_task(TrainContext(1, "t", 0, 10, resets(opt)))
    layer = model.layers[0]
    before = [t.detach()[1].clone() for t in layer.expert_tensors()]
    inactive = [t.detach()[2].clone() for t in layer.expert_tensors()]
    model.train()
    images, tokens = torch.randn(4, 3, 32, 32), clip.tokenizer(["a", "b"])
    F.cross_entropy(model(images, tokens, 1), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    guard.remove()
    assert any(not torch.equal(t.detach()[1], b) for t, b in zip(layer.expert_tensors(), before))
    assert all(torch.equal(t.detach()[2], b) for t, b in zip(layer.expert_tensors(), inactive))  # not grown yet


def test_an_old_tasks_outputs_are_unchanged_across_a_growth(clip):
    """Per-task routers: task 0's router, closed at its end, never reaches the experts grown for task 1."""
    model, policy = grow_model(clip.model, g=2, router_init="random")
    images, tokens = torch.randn(6, 3, 32, 32), clip.tokenizer(["a", "b", "c"])
    opt = optim.build_optimizer(model, 1e-2, 0.0)
    guard = SliceGuard(model, opt, router=0)
    model.train()
    for _ in range(3):  # task 0 trains its router and its experts
        F.cross_entropy(model(images, tokens, 0), torch.arange(6) % 3).backward()
        opt.step()
        opt.zero_grad()
    guard.remove()
    with torch.no_grad():  # task 0's router dislikes its own experts: a zero column would win without the mask
        for layer in model.layers:
            layer.router[0] -= 5.0 / layer.dim ** 0.5
    model.close_router(0)
    router0 = [layer.router.detach()[0].clone() for layer in model.layers]
    model.eval()
    old_img, old_txt = model.encode_image(images, 0), model.encode_text(tokens, 0)
    model.open_router(1)
    policy.begin_task(TrainContext(1, "t1", 0, 3, resets(optim.build_optimizer(model, 1e-2, 0.0))))
    assert all(int(layer.active.sum()) == 4 for layer in model.layers)
    assert all(torch.equal(layer.router.detach()[0], r) for layer, r in zip(model.layers, router0))  # closed: untouched
    assert torch.equal(model.encode_image(images, 0), old_img)
    assert torch.equal(model.encode_text(tokens, 0), old_txt)
    model.open_router(0)  # without the mask task 0 would now reach the new experts
    assert not torch.allclose(model.encode_image(images, 0), old_img)


@pytest.mark.parametrize("tasks", [1, 3, 11, 25])
def test_granularities_match_active_and_per_sample_params_on_any_number_of_tasks(tasks):
    """Default settings, ViT-B-16's widths (image 768, text 512): g1 / g2 / g4 within 5% after every task, both in
    active expert parameters and in the expert parameters one sample runs through."""
    order = "[" + ",".join(f"t{i}" for i in range(tasks)) + "]"
    per_task = {}
    for g in (1, 2, 4):
        cfg = config.load(None, ["policy.name=grow", f"policy.grow.granularity={g}", f"data.order={order}"])
        policy = policies.build(cfg)
        kw = policy.adapter_overrides()
        routing = moe.Routing()
        layers = [moe.MoEAdapter(d, kw["num_experts"], kw["hidden"](d), kw["top_k"], 1, "topk", False, 0.1, 0.1,
                                 routing, tower=tower) for tower, d in (("image", 768), ("text", 512))]
        model = moe.AdaptedCLIP(torch.nn.Module(), layers, routing)
        policy.attach(model, UsageTracker(model))
        per_task[g] = [model.param_counts()]
        for t in range(1, tasks):
            policy.begin_task(TrainContext(t, f"t{t}", 0, t))
            per_task[g].append(model.param_counts())
        assert all(int(layer.active.sum()) == g * tasks for layer in layers)
    for t in range(tasks):
        for key in ("active_experts", "per_sample"):
            values = [per_task[g][t][key] for g in (1, 2, 4)]
            assert (max(values) - min(values)) / max(values) <= 0.05, (t, key, values)


def test_grow_granularity_is_not_capped_by_moe_num_experts():
    """grow sizes its own slots (g x stages), so a granularity above moe.num_experts is a valid config."""
    cfg = config.load(None, ["policy.name=grow", "policy.grow.granularity=8", "moe.num_experts=4", "moe.top_k=2"])
    assert cfg.policy.grow.granularity == 8

