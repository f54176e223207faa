"""The plasticity trainer's update against grow_rl_synthetic's trainer step (GradScaler, gradients never cleared)."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from mtil.plasticity import study

LR, WD, CLIP, GROWTH = 1e-2, 1e-1, 0.5, 3  # growth every 3 finite steps, so the scale changes within the test


def tiny_train_cfg(gradients="scaler"):
    return study.load_config(None, [f"train.lr={LR}", f"train.weight_decay={WD}", f"train.clip_grad_norm={CLIP}",
                                    f"train.gradients={gradients}", f"train.scaler.growth_interval={GROWTH}"]).train


def batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def reference_chunk(model, data):
    """The reference trainer's chunk, with its GradScaler transcribed by hand: a fresh AdamW over every parameter
    and a fresh scale of 2^16; per step (loss * scale).backward() onto gradients that are never cleared, every
    gradient the optimizer holds divided by the scale, the global norm clipped, the step taken unless a gradient is
    inf / nan, the scale doubled after GROWTH finite steps in a row (halved after a bad one)."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    scale, good, scales = 65536.0, 0, []
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        (loss * scale).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = all(torch.isfinite(g).all() for g in grads)
        for g in grads:
            g.mul_(1.0 / scale)
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        if finite:
            opt.step()
        good = good + 1 if finite else 0
        if not finite:
            scale *= 0.5
        elif good == GROWTH:
            scale, good = scale * 2.0, 0
        scales.append(scale)
    return scales


def mtil_chunk(model, data, tcfg):
    opt = study.make_optimizer(model, tcfg)
    scaler = study.make_scaler(tcfg, torch.device("cpu"))
    scales = []
    for x, y in data:
        study.update(model, opt, scaler, F.cross_entropy(model(x), y), tcfg.clip_grad_norm)
        scales.append(scaler.get_scale() if scaler else None)
    return scales


def two_chunks(run, *args):
    """Chunk 1 trains both layers; then the first is frozen, as Progressive NN / Plasticity Injection freeze
    earlier parts, and chunk 2 (a fresh optimizer and scaler) trains the second."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    scales = run(model, batches(5, 1), *args)
    model[0].requires_grad_(False)
    frozen_before = copy.deepcopy(model[0])
    scales += run(model, batches(7, 2), *args)
    return model, frozen_before, scales


def test_default_update_is_the_reference_trainer_step():
    ours, frozen_before, our_scales = two_chunks(mtil_chunk, tiny_train_cfg())
    ref, _, ref_scales = two_chunks(reference_chunk)
    assert our_scales == ref_scales and our_scales[-1] == 4 * 65536.0  # doubled after steps 3 and 6 of chunk 2
    diffs = [(a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters())]
    assert max(diffs) < 1e-6, diffs
    grads = [(a.grad - b.grad).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters())]
    assert max(grads) < 1e-6, grads
    # the frozen layer's leftover gradient was divided by the scale at every step of chunk 2: it has vanished ...
    assert ours[0].weight.grad.abs().max() < 1e-25
    # ... but it still holds one, so the frozen layer still moves: AdamW decays it and takes normalised steps along
    # the vanishing leftover (|leftover| / 2^16 >> eps, so the first step is lr * sign), whose momentum fades by 0.9
    moved = (ours[0].weight - frozen_before.weight).abs()
    assert 0.5 * LR < moved.max() < 7 * LR, moved.max()

def test_fresh_gradients_leave_frozen_parameters_alone_and_train_like_the_scaler():
    fresh, frozen_before, scales = two_chunks(mtil_chunk, tiny_train_cfg("fresh"))
    assert scales == [None] * 12
    assert torch.equal(fresh[0].weight, frozen_before.weight) and fresh[0].weight.grad is None
    scaled, _, _ = two_chunks(mtil_chunk, tiny_train_cfg())
    # the trainable layer: the scaler's leftover enters divided by 2^16, so both train on the fresh gradient; they
    # differ only through the decayed frozen layer feeding it
    rel = (scaled[2].weight - fresh[2].weight).norm() / fresh[2].weight.norm()
    assert 0 < rel < 2e-2, rel
