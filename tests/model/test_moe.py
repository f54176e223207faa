"""Contract tests of the MoE adapters on a tiny open_clip model."""
import copy

import pytest
import torch
import torch.nn.functional as F

from mtil.bench.dispatch import reference_dispatch
from mtil.engine import optimizer as optim
from mtil.engine.slice_guard import SliceGuard
from mtil.errors import MtilError
from mtil.model import backbone, moe


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return backbone.load("mtil-tiny", None)


def fresh(clip, **kw):
    """A deep copy of the tiny CLIP with adapters attached (the module fixture stays plain)."""
    args = dict(num_experts=6, top_k=2, hidden=8, num_routers=3)
    args.update(kw)
    torch.manual_seed(1)
    return moe.attach(copy.deepcopy(clip.model), **args)


def batch(clip, n=4):
    g = torch.Generator().manual_seed(2)
    images = torch.randn(n, 3, 32, 32, generator=g)
    tokens = clip.tokenizer(["a photo of a cat", "a red square", "the digit 7", "a brick wall"][:n])
    return images, tokens


def train_some(model, images, tokens, route, steps, lr=1e-2, weight_decay=0.1):
    opt = optim.build_optimizer(model, lr, weight_decay)
    guard = SliceGuard(model, opt, route)
    model.routing.tracking = True
    model.train()
    labels = torch.arange(len(images)) % len(tokens)
    for _ in range(steps):
        loss = F.cross_entropy(model(images, tokens, route), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    guard.remove()
    return opt


@pytest.mark.parametrize("gating", ["topk", "dense"])
@pytest.mark.parametrize("route", [0, 2, "per-sample"])
def test_exact_at_init_both_towers(clip, gating, route):
    images, tokens = batch(clip)
    ref_img = clip.model.encode_image(images, normalize=True)
    ref_txt = clip.model.encode_text(tokens, normalize=True)
    model = fresh(clip, gating=gating)
    r = torch.tensor([0, 1, 2, -1]) if route == "per-sample" else route
    for mode in (False, True):  # eval and train (noise + dropout active)
        model.train(mode)
        torch.testing.assert_close(model.encode_image(images, r), ref_img, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.encode_text(tokens, r), ref_txt, atol=1e-6, rtol=0)


def test_vectorized_dispatch_matches_reference_values_and_grads(clip):
    model = fresh(clip, dropout=0.0)
    layer = model.layers[0]
    with torch.no_grad():
        for p in layer.expert_tensors():
            p.normal_(0, 0.2)
    x = torch.randn(5, 7, layer.dim)
    idx = torch.tensor([[0, 3], [5, 1], [2, 2], [4, 0], [1, 5]])
    weights = torch.rand(5, 2, requires_grad=True)
    fast = layer.dispatch(x, idx, weights)
    grads_fast = torch.autograd.grad(fast.square().sum(), layer.expert_tensors() + [weights])
    slow = reference_dispatch(layer, x, idx, weights)
    grads_slow = torch.autograd.grad(slow.square().sum(), layer.expert_tensors() + [weights])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_frozen_experts_bit_identical_after_20_steps(clip):
    model = fresh(clip)
    images, tokens = batch(clip)
    train_some(model, images, tokens, route=0, steps=3)  # gives every expert non-zero weights and optimizer moments
    for layer in model.layers:
        layer.frozen[[0, 3]] = True
    before = [[t.detach()[[0, 3]].clone() for t in layer.expert_tensors()] for layer in model.layers]
    others = [[t.detach()[[1, 2, 4, 5]].clone() for t in layer.expert_tensors()] for layer in model.layers]
    train_some(model, images, tokens, route=0, steps=20, lr=1e-2, weight_decay=0.1)
    changed = False
    for layer, frozen_before, other_before in zip(model.layers, before, others):
        for t, b, o in zip(layer.expert_tensors(), frozen_before, other_before):
            assert torch.equal(t.detach()[[0, 3]], b)
            changed |= not torch.equal(t.detach()[[1, 2, 4, 5]], o)
    assert changed, "the unfrozen experts should have trained"


def test_backbone_receives_no_gradient_and_stays_in_eval(clip):
    model = fresh(clip)
    images, tokens = batch(clip)
    train_some(model, images, tokens, route=0, steps=2)
    adapter_ids = {id(p) for p in model.adapter_parameters()}
    backbone_params = [p for p in model.clip.parameters() if id(p) not in adapter_ids]
    assert backbone_params and all(p.grad is None and not p.requires_grad for p in backbone_params)
    model.train()
    assert not model.clip.visual.training and not model.clip.transformer.resblocks[0].attn.training
    assert all(layer.training for layer in model.layers)


def test_per_task_routers_are_independent(clip):
    model = fresh(clip)
    images, tokens = batch(clip)
    train_some(model, images, tokens, route=0, steps=3)
    model.eval()
    out0 = model.encode_image(images, 0).detach()
    routers0 = [layer.router.detach()[0].clone() for layer in model.layers]
    for layer in model.layers:  # task 1 may only train unfrozen experts: freeze what task 0 used
        layer.frozen[:] = layer.task_counts > 0
    train_some(model, images, tokens, route=1, steps=5)
    model.eval()
    for layer, r0 in zip(model.layers, routers0):
        assert torch.equal(layer.router.detach()[0], r0)
        assert layer.router.detach()[1].abs().sum() > 0
    torch.testing.assert_close(model.encode_image(images, 0), out0, atol=0, rtol=0)


def test_topk_counts_sum_to_k_times_batch(clip):
    model = fresh(clip, top_k=2)
    images, tokens = batch(clip, 4)
    model.routing.tracking = True
    model.train()
    model.encode_image(images, 0)
    model.encode_text(tokens, 0)
    for layer in model.layers:
        assert int(layer.window_counts.sum()) == 2 * 4
        assert torch.equal(layer.window_counts, layer.task_counts)


def test_inactive_experts_never_selected(clip):
    model = fresh(clip, top_k=2)
    for layer in model.layers:
        layer.active[:] = False
        layer.active[[1, 4, 5]] = True
        with torch.no_grad():
            layer.router.normal_(0, 5.0)  # strong, random preferences, including for inactive experts
    images, _ = batch(clip)
    model.routing.tracking = True
    model.train()
    for _ in range(5):
        model.encode_image(images, 0)
    for layer in model.layers[:3]:
        assert int(layer.window_counts[[0, 2, 3]].sum()) == 0
        assert int(layer.window_counts.sum()) == 5 * 2 * 4


def test_balance_loss_enters_the_gradient(clip):
    model = fresh(clip)
    with torch.no_grad():
        for layer in model.layers:
            layer.router.normal_(0, 0.5)
    images, tokens = batch(clip)
    model.train()
    model(images, tokens, 0)
    assert model.aux_loss().item() == 0  # off unless asked for
    model.routing.balance = True
    torch.manual_seed(3)
    model(images, tokens, 0)
    aux = model.aux_loss()
    assert aux.item() > 0 and aux.requires_grad
    grad = torch.autograd.grad(aux, model.layers[0].router)[0]
    assert grad.abs().sum() > 0


def test_param_counts_follow_masks(clip):
    model = fresh(clip, num_experts=6, hidden=8)
    layer = model.layers[0]
    per_expert = layer.expert_numel()
    assert per_expert == layer.dim * 8 + 8 + 8 * layer.dim + layer.dim
    full = model.param_counts()
    for layer in model.layers:
        layer.active[3:] = False
        layer.frozen[0] = True
    half = model.param_counts()
    router_cols = 2 * model.layers[0].dim  # router + noise column of one router
    assert full["active"] - half["active"] == len(model.layers) * 3 * (per_expert + router_cols)
    assert half["frozen"] == len(model.layers) * per_expert


def test_bad_tower_and_blocks(clip):
    with pytest.raises(MtilError, match="unknown tower 'audio'"):
        moe.attach(copy.deepcopy(clip.model), towers=("audio",))
    with pytest.raises(MtilError, match="outside"):
        moe.attach(copy.deepcopy(clip.model), blocks=[0, 9])
    model = moe.attach(copy.deepcopy(clip.model), towers=("image",), blocks=[1, 3])
    assert [(layer.tower, layer.block) for layer in model.layers] == [("image", 1), ("image", 2)]
