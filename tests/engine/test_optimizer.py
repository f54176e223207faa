"""The adapters' optimizer step and schedule against MoE-Adapters' (JiazuoYu/MoE-Adapters4CL, mtil/clip/model.py,
mtil/src/models/finetune.py, mtil/src/utils.py `cosine_lr`), each written by hand from the reference.

There every expert and every task's router is its own Parameter, the SparseDispatcher leaves an expert without
samples out of the graph (its grad stays None after `zero_grad()`), frozen experts are `requires_grad=False`, and
torch's AdamW skips whatever has no gradient."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtil.engine import optimizer as optim
from mtil.engine.slice_guard import SliceGuard
from mtil.model import moe

E, D, H, K, R = 6, 12, 5, 2, 2
FROZEN, TRAINED_ROUTER = 4, 1


class ReferenceMoE(nn.Module):
    """MoE-Adapters' adapter mixture with one Parameter set per expert and per task router; an expert enters the
    graph only with the samples routed to it."""

    def __init__(self, layer: moe.MoEAdapter):
        super().__init__()
        copy = lambda t: nn.Parameter(t.detach().clone())   # noqa: E731
        self.down_w = nn.ParameterList(copy(layer.w_down[e].t()) for e in range(E))   # nn.Linear layout [h, d]
        self.down_b = nn.ParameterList(copy(layer.b_down[e]) for e in range(E))
        self.up_w = nn.ParameterList(copy(layer.w_up[e].t()) for e in range(E))
        self.up_b = nn.ParameterList(copy(layer.b_up[e]) for e in range(E))
        self.routers = nn.ParameterList(copy(layer.router[r]) for r in range(R))
        self.noises = nn.ParameterList(copy(layer.noise[r]) for r in range(R))
        self.scale = layer.scale

    def expert_params(self, e):
        return [self.down_w[e], self.down_b[e], self.up_w[e], self.up_b[e]]

    def forward(self, x, task):
        tok = x[:, 0]
        clean = tok @ self.routers[task]
        logits = clean + torch.randn_like(clean) * (F.softplus(tok @ self.noises[task]) + 1e-2)
        top, idx = logits.topk(K, dim=1)
        gates = torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, dim=1))
        out = torch.zeros_like(x)
        for e in range(E):
            rows = (gates[:, e] > 0).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue                                    # popped: this expert is not in the graph
            h = F.relu(F.linear(x[rows], self.down_w[e], self.down_b[e]))
            y = F.linear(h, self.up_w[e], self.up_b[e]) * self.scale
            out = out.index_add(0, rows, y * gates[rows, e][:, None, None])
        return out, gates


def make_layer():
    torch.manual_seed(0)
    layer = moe.MoEAdapter(D, E, H, K, R, "topk", True, 0.0, 0.1, moe.Routing())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in layer.expert_tensors():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        layer.router.copy_(torch.randn(layer.router.shape, generator=g))
        layer.noise.copy_(torch.randn(layer.noise.shape, generator=g) * 0.3)
    return layer


def slot_views(layer, opt, e):
    """(values, exp_avg, exp_avg_sq) of expert e in the reference's [out, in] layout, and its step count."""
    out = []
    for p in layer.expert_tensors():
        st = opt.state.get(p, {})
        vals = [p.detach()[e]] + [st[k][e] if k in st else torch.zeros_like(p[e]) for k in ("exp_avg", "exp_avg_sq")]
        out.append([v.t() if v.dim() == 2 else v for v in vals])
    step = float(opt.state[layer.w_down]["step"][e]) if layer.w_down in opt.state else 0.0
    return out, step


def test_unselected_frozen_and_other_router_slots_match_a_per_expert_adamw():
    layer = make_layer()
    layer.frozen[FROZEN] = True
    ref = ReferenceMoE(layer)
    for p in ref.expert_params(FROZEN):
        p.requires_grad_(False)                        # MoE-Adapters' activate-freeze
    ref_opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    opt = optim.build_optimizer(SimpleNamespace(layers=[layer]), 1e-2, 0.1)
    guard = SliceGuard(SimpleNamespace(layers=[layer]), opt, TRAINED_ROUTER)
    layer.routing.route = TRAINED_ROUTER
    layer.train()
    g = torch.Generator().manual_seed(11)
    untouched_checks = 0
    for step in range(300):
        x, target = torch.randn(3, 4, D, generator=g), torch.randn(3, 4, D, generator=g)
        lr = 1e-2 * (0.2 + 0.8 * ((step * 7) % 10) / 9)           # a changing schedule
        for o in (opt, ref_opt):
            o.param_groups[0]["lr"] = lr
        torch.manual_seed(1000 + step)
        out = layer(x)
        torch.manual_seed(1000 + step)
        ref_out, gates = ref(x, TRAINED_ROUTER)
        torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
        selected = gates.gt(0).any(0)
        assert torch.equal(layer.step_selected, selected)
        idle = [e for e in range(E) if not selected[e]] + [FROZEN]
        before = {e: slot_views(layer, opt, e) for e in idle}
        other_router = (layer.router.detach()[0].clone(), layer.noise.detach()[0].clone())
        for o, y in ((opt, out), (ref_opt, ref_out)):
            o.zero_grad(set_to_none=True)
            F.mse_loss(y, target).backward()
            o.step()
        for e in idle:                                     # not touched by this step: values, moments, step count
            (tensors, count), (tensors0, count0) = slot_views(layer, opt, e), before[e]
            assert count == count0
            for now, then in zip(tensors, tensors0):
                for a, b in zip(now, then):
                    assert torch.equal(a, b)
            untouched_checks += 1
        assert torch.equal(layer.router.detach()[0], other_router[0])
        assert torch.equal(layer.noise.detach()[0], other_router[1])
    assert untouched_checks > 300                          # experts really went unselected in many steps
    for e in range(E):                                     # every slot equals the per-expert reference
        (tensors, count) = slot_views(layer, opt, e)
        for i, (p, views) in enumerate(zip(ref.expert_params(e), tensors)):
            torch.testing.assert_close(views[0], p.detach(), atol=1e-6, rtol=0)
            st = ref_opt.state.get(p)
            if e == FROZEN:
                assert st is None and count == 0 and not views[1].any() and not views[2].any()
                continue
            torch.testing.assert_close(views[1], st["exp_avg"], atol=1e-6, rtol=0)
            torch.testing.assert_close(views[2], st["exp_avg_sq"], atol=1e-6, rtol=0)
            assert count == float(st["step"])
    for r in range(R):
        torch.testing.assert_close(layer.router.detach()[r], ref.routers[r].detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(layer.noise.detach()[r], ref.noises[r].detach(), atol=1e-6, rtol=0)
    assert ref_opt.state.get(ref.routers[0]) is None
    assert not opt.state[layer.router]["exp_avg"][0].any() and not opt.state[layer.router]["step"][0].any()
    guard.remove()


def reference_cosine_lr(base_lr, warmup_length, steps):
    """MoE-Adapters' / ZSCL's utils.cosine_lr, as a list of the lrs of loop steps 0..steps (its loop is
    range(steps + 1))."""
    out = []
    for step in range(steps + 1):
        if step < warmup_length:
            out.append(base_lr * (step + 1) / warmup_length)
        else:
            e, es = step - warmup_length, steps - warmup_length
            out.append(0.5 * (1 + np.cos(np.pi * e / es)) * base_lr)
    return out


@pytest.mark.parametrize("iterations,warmup", [(1000, 100), (50, 5), (7, 3)])
def test_reference_schedule_equals_cosine_lr_step_by_step(iterations, warmup):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = optim.build_scheduler(opt, iterations, warmup, 0.0, "reference")
    ours = []
    for s in range(iterations + 1):                        # update n = s + 1, as the Trainer steps it
        sched.step_update(s + 1)
        ours.append(opt.param_groups[0]["lr"])
    ref = reference_cosine_lr(1e-3, warmup, iterations)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-18)
    assert ours[warmup] == pytest.approx(1e-3) and ours[-1] == pytest.approx(0.0, abs=1e-18)


def test_reference_schedule_against_timm_numbers():
    """The two schedules of `train.schedule` differ as measured in the issue: at warm-up end and at update 501."""
    lrs = {}
    for kind in optim.SCHEDULES:
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = optim.build_scheduler(opt, 1000, 100, 0.0, kind)
        seq = []
        for s in range(1000):
            sched.step_update(s + 1)
            seq.append(opt.param_groups[0]["lr"])
        lrs[kind] = seq
    assert lrs["reference"][100] == pytest.approx(1.0) and lrs["timm"][100] == pytest.approx(0.976, abs=1e-3)
    assert lrs["reference"][500] == pytest.approx(0.5 * (1 + math.cos(math.pi * 400 / 900)))
    assert lrs["timm"][500] == pytest.approx(0.5 * (1 + math.cos(math.pi * 501 / 1000)))
    assert sum(lrs["timm"]) / sum(lrs["reference"]) == pytest.approx(0.90, abs=0.01)


@pytest.mark.parametrize("final_step", [True, False])
def test_a_run_trains_each_task_on_the_reference_schedule(tiny_args, tmp_path, monkeypatch, final_step):
    """Through `mtil run`: per task a fresh optimizer at the task's lr, the lrs of loop steps 0..iterations of
    cosine_lr (6 iterations, warm-up 2 in the tiny config); the reference's last iteration (lr 0) only with
    train.final_step, and it changes no weight."""
    from mtil.cli import main
    seen = []
    original = optim.SlotAdamW.step

    def step(self, closure=None):
        before = [p.detach().clone() for p in self.param_groups[0]["params"]]
        out = original(self, closure)
        lr = self.param_groups[0]["lr"]
        moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, self.param_groups[0]["params"]))
        seen.append((id(self), lr, moved))
        return out
    monkeypatch.setattr(optim.SlotAdamW, "step", step)
    lrs = {"Red": 1e-2, "Green": 3e-3, "Blue": 1e-2}
    assert main(["run", *tiny_args, "--set=policy.name=none", f"--set=train.final_step={str(final_step).lower()}",
                 "--set=train.lr_per_task={Green: 3.0e-3}", "--out", str(tmp_path / "run")]) == 0
    per_task = {}
    for opt_id, lr, moved in seen:
        per_task.setdefault(opt_id, []).append((lr, moved))
    assert len(per_task) == 3
    for (name, base), steps in zip(lrs.items(), per_task.values()):
        expected = reference_cosine_lr(base, 2, 6)[:7 if final_step else 6]
        assert [lr for lr, _ in steps] == pytest.approx(expected, rel=1e-12, abs=1e-18), name
        assert all(moved for _, moved in steps[:6])
        if final_step:
            assert steps[6] == (0.0, False)                 # lr 0: no weight changes


def test_data_parallel_update_matches_a_per_expert_adamw_with_zero_gradients():
    """train.update_mode=data-parallel: MoE-Adapters' script under DataParallel, where every trainable expert Parameter
    gets a summed (zero) gradient, never None, so the reference's AdamW steps unselected experts by momentum."""
    layer = make_layer()
    layer.frozen[FROZEN] = True
    ref = ReferenceMoE(layer)
    for p in ref.expert_params(FROZEN):
        p.requires_grad_(False)
    ref_opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    opt = optim.build_optimizer(SimpleNamespace(layers=[layer]), 1e-2, 0.1)
    guard = SliceGuard(SimpleNamespace(layers=[layer]), opt, TRAINED_ROUTER, update="data-parallel")
    single = make_layer()   # the single-GPU update on the same stream, to show the two really differ
    single.frozen[FROZEN] = True
    single_opt = optim.build_optimizer(SimpleNamespace(layers=[single]), 1e-2, 0.1)
    single_guard = SliceGuard(SimpleNamespace(layers=[single]), single_opt, TRAINED_ROUTER)
    for m in (layer, single):
        m.routing.route = TRAINED_ROUTER
        m.train()
    g = torch.Generator().manual_seed(11)
    moved_unselected = 0
    for step in range(200):
        x, target = torch.randn(3, 4, D, generator=g), torch.randn(3, 4, D, generator=g)
        torch.manual_seed(1000 + step)
        out = layer(x)
        torch.manual_seed(1000 + step)
        ref_out, gates = ref(x, TRAINED_ROUTER)
        torch.manual_seed(1000 + step)
        single_out = single(x)
        idle = [e for e in range(E) if not gates.gt(0).any(0)[e] and e != FROZEN]
        before = {e: layer.w_down.detach()[e].clone() for e in idle}
        for o, y in ((opt, out), (ref_opt, ref_out), (single_opt, single_out)):
            o.zero_grad(set_to_none=True)
            F.mse_loss(y, target).backward()
        for e in range(E):                                  # DataParallel's reduce: zeros, not None
            for p in ref.expert_params(e):
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        for o in (opt, ref_opt, single_opt):
            o.step()
        moved_unselected += sum(not torch.equal(layer.w_down.detach()[e], before[e]) for e in idle)
    assert moved_unselected > 50                            # unselected experts really moved by momentum
    worst = 0.0
    for e in range(E):
        tensors, count = slot_views(layer, opt, e)
        for p, views in zip(ref.expert_params(e), tensors):
            worst = max(worst, float((views[0] - p.detach()).abs().max()))
            if e == FROZEN:
                assert ref_opt.state.get(p) is None and count == 0
                continue
            torch.testing.assert_close(views[1], ref_opt.state[p]["exp_avg"], atol=1e-6, rtol=0)
            torch.testing.assert_close(views[2], ref_opt.state[p]["exp_avg_sq"], atol=1e-6, rtol=0)
            assert count == float(ref_opt.state[p]["step"]) == 200
    for r in range(R):
        worst = max(worst, float((layer.router.detach()[r] - ref.routers[r].detach()).abs().max()))
    print(f"data-parallel update vs per-expert AdamW with zero gradients: max |difference| {worst:.2e}")
    assert worst < 1e-5
    gap = max(float((a - b).abs().max()) for a, b in zip(layer.expert_tensors(), single.expert_tensors()))
    assert gap > 1e-3                                       # the two updates are not the same computation
    guard.remove()
    single_guard.remove()
