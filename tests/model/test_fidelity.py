"""Fidelity to the reference implementations, each pinned against a hand-written reference.

MoE-Adapters (JiazuoYu/MoE-Adapters4CL, mtil/clip/model.py `ResidualAttentionBlock.forward`, `noisy_top_k_gating`,
mtil/clip/adapter.py): `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) + moe(x)`, routed on x's first token.
"""
import copy
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtil.engine import optimizer as optim
from mtil.model import backbone, moe

TOL = dict(atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return backbone.load("mtil-tiny", None)


def randomise(model, seed=5):
    """Non-zero experts, routers and noise weights (the init has zero up-projections and routers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            for p in layer.expert_tensors():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            layer.router.copy_(torch.randn(layer.router.shape, generator=g) * 0.5)
            layer.noise.copy_(torch.randn(layer.noise.shape, generator=g) * 0.3)


def reference_block(block, layer, x, router, train, attn_mask=None, batch_first=True):
    """MoE-Adapters' block forward, written from the reference: per sample, per chosen expert, in the original
    [L, N, d] layout. `layer` only lends its weights (stacked [E, ...] as the reference's E Adapter modules)."""
    x = x if not batch_first else x.transpose(0, 1)                  # -> [L, N, d]
    h = block.ln_1(x)
    attn = F.multi_head_attention_forward(
        h, h, h, x.shape[-1], block.attn.num_heads, block.attn.in_proj_weight, block.attn.in_proj_bias, None, None,
        False, 0.0, block.attn.out_proj.weight, block.attn.out_proj.bias, training=False, need_weights=False,
        attn_mask=attn_mask)[0]
    x = x + attn
    x_re = x.permute(1, 0, 2)[:, 0, :]                                  # first token per sample [N, d]
    w_gate, w_noise = layer.router[router], layer.noise[router]
    clean = x_re @ w_gate
    if train:
        noise_std = F.softplus(x_re @ w_noise) + 1e-2
        logits = clean + torch.randn_like(clean) * noise_std
    else:
        logits = clean
    top, top_idx = logits.topk(min(layer.top_k + 1, layer.num_experts), dim=1)
    gates = torch.zeros_like(logits).scatter(1, top_idx[:, :layer.top_k], torch.softmax(top[:, :layer.top_k], dim=1))
    tokens = x.permute(1, 0, 2)                                          # [N, L, d]
    y = torch.zeros_like(tokens)
    for n in range(tokens.shape[0]):
        for e in range(layer.num_experts):
            if gates[n, e] > 0:                                          # SparseDispatcher: gate != 0 only
                down = F.relu(tokens[n] @ layer.w_down[e] + layer.b_down[e])
                up = (down @ layer.w_up[e] + layer.b_up[e]) * layer.scale
                y[n] = y[n] + gates[n, e] * up
    x = x + block.mlp(block.ln_2(x)) + y.permute(1, 0, 2)
    return x.transpose(0, 1) if batch_first else x


def block_inputs(model, tower, clip, n=4):
    """A realistic input for block 1 of a tower: the output of block 0 on real images / prompts."""
    g = torch.Generator().manual_seed(3)
    if tower == "image":
        images = torch.randn(n, 3, 32, 32, generator=g)
        v = model.clip.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(n, 1, -1), x], dim=1) + v.positional_embedding
        x = v.ln_pre(x)
        return v.transformer, x, None
    tokens = clip.tokenizer(["a photo of a cat", "a red square", "the digit 7", "a brick wall"][:n])
    x = model.clip.token_embedding(tokens) + model.clip.positional_embedding
    return model.clip.transformer, x, model.clip.attn_mask


def adapted_model(clip, **kw):
    args = dict(num_experts=6, top_k=2, hidden=8, num_routers=3, dropout=0.0)
    args.update(kw)
    torch.manual_seed(1)
    model = moe.attach(copy.deepcopy(clip.model), **args)
    randomise(model)
    return model


def params(layer):
    return layer.expert_tensors() + layer.router_tensors()


def ours_and_reference(model, block, x, mask, router, train, seed=11):
    """(our output, our grads, reference output, reference grads); grads of sum(out^2) w.r.t. params and x."""
    layer = block.moe
    model.train(train)
    x = x.detach().requires_grad_(True)
    outs = []
    for reference in (False, True):
        model.routing.route = -1 if reference else router               # -1: the reference's own mlp, no hook
        torch.manual_seed(seed)                                          # the same gating noise for both
        out = reference_block(block, layer, x, router, train, mask, layer.batch_first) if reference else block(x, attn_mask=mask)
        grads = torch.autograd.grad(out.square().sum(), params(layer) + [x], allow_unused=True)
        outs += [out, grads]
    return outs


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("train", [False, True])
def test_adapted_block_matches_the_reference_forward_and_gradients(clip, tower, train):
    """fp32 forward to 1e-6; fp64 forward and gradients to 1e-6 (fp32 gradients sum thousands of terms and
    differ by float rounding only, ~1e-5 relative)."""
    model = adapted_model(clip)
    transformer, x0, mask = block_inputs(model, tower, clip)
    assert transformer.batch_first  # open_clip's layout for both towers
    block = transformer.resblocks[1]
    ours, _, ref, _ = ours_and_reference(model, block, x0, mask, 1, train)
    print(f"{tower} train={train}: fp32 max |ours - reference| = {(ours - ref).abs().max().item():.2e}")
    torch.testing.assert_close(ours, ref, **TOL)
    model.routing.route = -1
    assert (ours - block(x0, attn_mask=mask)).abs().max() > 1e-2   # the experts contribute
    model.double()
    mask = None if mask is None else mask.double()
    ours, grads, ref, ref_grads = ours_and_reference(model, block, x0.double(), mask, 1, train)
    torch.testing.assert_close(ours, ref, **TOL)
    for name, a, b in zip(["w_down", "b_down", "w_up", "b_up", "router", "noise", "x"], grads, ref_grads):
        if not train and name == "noise":
            assert a is None and b is None  # no noise in eval
            continue
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_sequence_first_layout_matches_the_reference():
    """A text transformer run sequence-first ([L, N, d], open_clip's batch_first=False and the reference's layout)."""
    torch.manual_seed(0)
    width, length = 32, 6

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = open_clip.transformer.Transformer(width, 2, 4, batch_first=False)

    text = backbone.freeze(Text()).double()
    model = moe.attach(text, towers=("text",), num_experts=5, top_k=2, hidden=4, num_routers=2, dropout=0.0)
    randomise(model)
    block = text.transformer.resblocks[1]
    mask = torch.full((length, length), float("-inf")).triu_(1)
    model.double()
    x = torch.randn(length, 3, width, dtype=torch.float64)
    for train in (False, True):
        ours, grads, ref, ref_grads = ours_and_reference(model, block, x, mask.double(), 0, train, seed=4)
        torch.testing.assert_close(ours, ref, **TOL)
        for a, b in zip(grads, ref_grads):
            if b is not None:
                torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("adapter_input", ["residual", "ln_2"])
@pytest.mark.parametrize("expert_init", ["lora", "linear"])
def test_exact_at_init_for_every_input_and_init(clip, adapter_input, expert_init):
    g = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 32, 32, generator=g)
    tokens = clip.tokenizer(["a photo of a cat", "a red square", "the digit 7", "a brick wall"])
    ref_img, ref_txt = clip.model.encode_image(images, normalize=True), clip.model.encode_text(tokens, normalize=True)
    model = moe.attach(copy.deepcopy(clip.model), num_experts=6, hidden=8, num_routers=2,
                       adapter_input=adapter_input, expert_init=expert_init)
    for mode in (False, True):
        model.train(mode)
        torch.testing.assert_close(model.encode_image(images, 1), ref_img, **TOL)
        torch.testing.assert_close(model.encode_text(tokens, torch.tensor([0, 1, -1, 0])), ref_txt, **TOL)


def test_ln2_option_feeds_the_normalised_stream(clip):
    model = adapted_model(clip, adapter_input="ln_2")
    transformer, x, _ = block_inputs(model, "image", clip)
    block = transformer.resblocks[0]
    model.eval()
    model.routing.route = 0
    out = block(x)
    model.routing.route = -1
    h = x + block.attention(block.ln_1(x))
    plain_mlp = block.mlp(block.ln_2(h))
    model.routing.route = 0
    expected = h + plain_mlp + block.moe(block.ln_2(h))
    torch.testing.assert_close(out, expected, **TOL)


def test_lora_init_matches_the_reference_adapter():
    """`Adapter(init_option="lora")`: down weight Kaiming-uniform(a=sqrt 5) = U(+-1/sqrt(d)), all else zero."""
    torch.manual_seed(0)
    layer = moe.MoEAdapter(256, 40, 16, 2, 1, "topk", True, 0.1, 0.1, moe.Routing())
    bound = 1 / math.sqrt(256)
    w = layer.w_down.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.98 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound   # uniform's std
    for t in (layer.b_down, layer.w_up, layer.b_up, layer.router, layer.noise):
        assert not t.detach().any()
    linear = moe.MoEAdapter(256, 40, 16, 2, 1, "topk", True, 0.1, 0.1, moe.Routing(), init="linear")
    assert linear.b_down.detach().abs().max() > 0.9 * bound and not linear.w_up.detach().any()


def test_text_routing_depends_on_the_router_only(clip):
    """The SOT token sees only itself under causal attention: every prompt takes the same experts per block."""
    model = adapted_model(clip)
    tokens = clip.tokenizer(["a photo of a cat", "a red square", "the digit 7", "a brick wall"])
    model.eval()
    model.routing.tracking = False
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o: seen.append((m.name, i[0][:, 0].detach())))
             for layer in model.layers if layer.tower == "text"]
    model.encode_text(tokens, 1)
    for h in hooks:
        h.remove()
    assert seen
    for _, first in seen:
        torch.testing.assert_close(first, first[:1].expand_as(first), **TOL)


# ---- optimizer: a reset slot trains as under a freshly created AdamW -------------------------------------------

def one_layer_model(noisy=True):
    routing = moe.Routing()
    torch.manual_seed(0)
    layer = moe.MoEAdapter(12, 5, 4, 2, 2, "topk", noisy, 0.0, 0.1, routing)
    return moe.AdaptedCLIP(nn.Module(), [layer], routing), layer


def slot(t, e, router):
    return t[e] if not router else t[:, :, e]


@pytest.mark.parametrize("reset_at", [100, 500])
def test_reset_slot_updates_equal_a_fresh_adamw(reset_at):
    model, layer = one_layer_model()
    twin_model, twin = one_layer_model()
    opt = optim.build_optimizer(model, 1e-3, 0.1)
    twin_opt = optim.build_optimizer(twin_model, 1e-3, 0.1)
    plain = [nn.Parameter(t.detach().clone()) for t in params(layer)]
    plain_opt = torch.optim.AdamW(plain, lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(9)
    e, after = 2, 12
    fresh = fresh_opt = None
    for step in range(reset_at + after):
        if step == reset_at:
            optim.reset_state(opt, layer, e, router_column=True)
            fresh = [nn.Parameter(slot(t, e, i >= 4).detach().clone()) for i, t in enumerate(params(layer))]
            fresh_opt = torch.optim.AdamW(fresh, lr=1e-3, weight_decay=0.1)
        lr = 1e-3 * (0.3 + 0.7 * ((step * 37) % 11) / 10)                 # a changing schedule
        grads = [torch.randn(t.shape, generator=g) for t in params(layer)]
        for o in (opt, twin_opt, plain_opt) + ((fresh_opt,) if fresh_opt else ()):
            o.param_groups[0]["lr"] = lr
        for ps, o in ((params(layer), opt), (params(twin), twin_opt), (plain, plain_opt)):
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            o.step()
        if fresh_opt is not None:
            for i, (p, gr) in enumerate(zip(fresh, grads)):
                p.grad = slot(gr, e, i >= 4).clone()
            fresh_opt.step()
    keep = [x for x in range(layer.num_experts) if x != e]
    for i, (t, tw, pl, fr) in enumerate(zip(params(layer), params(twin), plain, fresh)):
        router = i >= 4
        torch.testing.assert_close(tw.detach(), pl.detach(), **TOL)          # no reset: torch's AdamW
        torch.testing.assert_close(slot(t.detach(), e, router), fr.detach(), **TOL)
        others = t.detach()[:, :, keep] if router else t.detach()[keep]
        twin_others = tw.detach()[:, :, keep] if router else tw.detach()[keep]
        assert torch.equal(others, twin_others)                              # other slots: bit-identical
    assert not torch.allclose(slot(params(layer)[0].detach(), e, False), slot(params(twin)[0].detach(), e, False))


def test_optimizer_state_round_trips_per_slot_steps():
    model, layer = one_layer_model()
    opt = optim.build_optimizer(model, 1e-2, 0.0)
    for _ in range(3):
        for p in params(layer):
            p.grad = torch.ones_like(p)
        opt.step()
    optim.reset_state(opt, layer, 1)
    state = copy.deepcopy(opt.state_dict())
    model2, layer2 = one_layer_model()
    opt2 = optim.build_optimizer(model2, 1e-2, 0.0)
    opt2.load_state_dict(state)
    steps = opt2.state[layer2.w_down]["step"].flatten().tolist()
    assert steps == [3, 0, 3, 3, 3]
