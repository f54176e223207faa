"""Each baseline's loss and between-task operation against a hand-written restatement of ZSCL's code
(Thunderbeee/ZSCL, mtil/src/models/finetune.py, helpers.py, icarl.py, dynamic_dataset.py), on a tiny CLIP with
random weights in float64: values and gradients."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtil import config
from mtil.data import pipeline
from mtil.methods.distill import distillation_loss, text_features
from mtil.methods.finetune import FineTune
from mtil.methods.icarl import herding
from mtil.methods.lwf import LwF
from mtil.methods.wiseft import WiSEFT
from mtil.methods.zscl import ZSCL
from mtil.policies import TrainContext

from method_helpers import ONE_PROCESS, facts, method_root, perturb, tiny_backbone  # noqa: F401 (fixture)

T, LS = 2.0, 0.2


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def zscl_loop_body(model, ref_model, l2_model, images, labels, texts, ref_images, ref_texts, *, l2, image_loss,
                   text_loss):
    """finetune.py's training step of `--method ZSCL` (and of LwF / iCaRL, which differ only in the reference model,
    images and texts), by hand: separate forwards, `distillation` as -sum p log q."""
    scale = model.logit_scale.exp()
    embeddings = unit(model.encode_text(texts))
    out = unit(model.encode_image(images))
    loss = F.cross_entropy(scale * out @ embeddings.t(), labels, label_smoothing=LS)
    if l2 > 0:
        loss = loss + l2 * sum(((p - q.detach()) ** 2).sum() for p, q in zip(model.parameters(), l2_model.parameters()))
    with torch.no_grad():
        ref_embeddings = unit(ref_model.encode_text(ref_texts))
        ref_out = unit(ref_model.encode_image(ref_images))
    ref_out_current = unit(model.encode_image(ref_images))
    logits_current = scale * ref_out_current @ ref_embeddings.t()
    logits_ref = scale * ref_out @ ref_embeddings.t()

    def distillation(t, s):
        return -(F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(1).mean() * T ** 2
    if image_loss:
        loss = loss + distillation(logits_ref, logits_current)
    if text_loss:
        loss = loss + distillation(logits_ref.t(), logits_current.t())
    return loss


def batch(b, n=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)
    ref_images = torch.randn(n + 2, 3, 32, 32, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])[:n]
    texts = b.tokenizer(["a photo of a red square.", "a photo of a blue circle.", "a photo of a green line."])
    return images, labels, texts, ref_images


def grads(params):
    return [p.grad.detach().clone() for p in params]


def compare(method, b, reference_model, ref_model, l2_model, ref_texts, *, l2, image_loss, text_loss):
    """Our loss (one joint forward through `method.module`) and the hand-written step: values and gradients."""
    images, labels, texts, ref_images = batch(b)
    method.reference_images = lambda ctx: ref_images
    ctx = TrainContext(0, "Red", 0, 0)
    ours = method.loss(method.module, images, labels, texts, ctx)
    ours.backward()
    theirs = zscl_loop_body(reference_model, ref_model, l2_model, images, labels, texts, ref_images, ref_texts,
                            l2=l2, image_loss=image_loss, text_loss=text_loss)
    theirs.backward()
    named = dict(reference_model.named_parameters())
    diffs = [float((p.grad - named[n].grad).abs().max()) for n, p in method.named_weights().items()]
    return abs(float(ours.detach()) - float(theirs.detach())), max(diffs), float(theirs.detach())


@pytest.mark.parametrize("image_loss,text_loss,l2", [(True, False, 0.0), (False, True, 0.0), (True, True, 1.0)])
def test_zscl_step_loss_and_gradients_equal_the_reference(method_root, image_loss, text_loss, l2):
    b = tiny_backbone()
    method = ZSCL(facts(data_root=str(method_root)), reference="Reference", avg_freq=0, l2=l2, temperature=T,
                  image_loss=image_loss, text_loss=text_loss)
    method.attach(b, ONE_PROCESS, [], fresh=True)          # teacher: a frozen copy of the weights now (zero-shot)
    method.start = method.weights()                        # the task started from the zero-shot weights
    perturb(method.clip)                                   # ... and training moved them
    captions = method._reference[1]
    ref_texts = b.tokenizer(captions)
    method.texts = text_features(method.teacher, ref_texts, 16)
    zero_shot = copy.deepcopy(method.teacher)
    value_diff, grad_diff, value = compare(method, b, copy.deepcopy(method.clip), zero_shot, zero_shot, ref_texts,
                                           l2=l2, image_loss=image_loss, text_loss=text_loss)
    assert value > 0.1
    assert value_diff < 1e-10 and grad_diff < 1e-10, (value_diff, grad_diff)


def test_plain_finetune_step_equals_the_reference_cross_entropy():
    b = tiny_backbone()
    method = FineTune(facts())
    method.attach(b, ONE_PROCESS, [], fresh=True)
    perturb(method.clip)
    model = copy.deepcopy(method.clip)
    images, labels, texts, _ = batch(b)
    ours = method.loss(method.module, images, labels, texts, TrainContext(0, "Red", 0, 0))
    ours.backward()
    theirs = F.cross_entropy(model.logit_scale.exp() * unit(model.encode_image(images))
                             @ unit(model.encode_text(texts)).t(), labels, label_smoothing=LS)
    theirs.backward()
    named = dict(model.named_parameters())
    assert abs(float(ours.detach()) - float(theirs.detach())) < 1e-12
    assert max(float((p.grad - named[n].grad).abs().max()) for n, p in method.named_weights().items()) < 1e-12
    # --train-mode=whole: every parameter but the logit scale trains
    assert set(method.named_weights()) == {n for n, _ in method.clip.named_parameters()} - {"logit_scale"}
    assert method.clip.logit_scale.grad is None


@pytest.fixture(scope="module")
def red(method_root):
    cfg = config.load(None, [f"data.root={method_root}", "data.order=[Red,Green]"])
    return [pipeline.load_task(cfg.data, n, 0) for n in ("Red", "Green")]


def test_lwf_distils_the_task_start_on_its_own_images_over_its_prompts(red):
    b = tiny_backbone()
    method = LwF(facts(), temperature=T, image_loss=True, text_loss=True)
    method.attach(b, ONE_PROCESS, red, fresh=True)
    perturb(method.clip, seed=5)                     # the weights task 2 starts from (task 1's result)
    method.begin_task(TrainContext(1, "Green", 0, 6), optimizer=None)
    start = copy.deepcopy(method.clip)
    for (n, p), q in zip(method.teacher.named_parameters(), start.parameters()):
        assert torch.equal(p, q), n                  # the teacher is the model the task started from
    images = method.reference_set(red[1], None)
    assert images.sources[0][0] == "Green" and len(images) == len(red[1].train)
    prompts = b.tokenizer([p[0] for p in red[1].prompts(all_templates=False)])
    assert torch.allclose(method.texts, unit(start.encode_text(prompts)), atol=1e-12)
    perturb(method.clip, seed=6)                     # training moves the student
    value_diff, grad_diff, _ = compare(method, b, copy.deepcopy(method.clip), start, start, prompts, l2=0.0,
                                       image_loss=True, text_loss=True)
    assert value_diff < 1e-10 and grad_diff < 1e-10, (value_diff, grad_diff)


def test_distillation_loss_gradient_reaches_only_the_student_features():
    g = torch.Generator().manual_seed(0)
    teacher, texts = unit(torch.randn(5, 8, generator=g)), unit(torch.randn(7, 8, generator=g))
    student = unit(torch.randn(5, 8, generator=g)).requires_grad_(True)
    loss = distillation_loss(teacher, student, texts, torch.tensor(20.0), T, True, True)
    loss.backward()
    assert student.grad.abs().sum() > 0
    same = distillation_loss(teacher, teacher.clone(), texts, torch.tensor(20.0), T, True, False)
    p = F.softmax(20 * teacher @ texts.t() / T, 1)
    assert float(same) == pytest.approx(float(-(p * p.log()).sum(1).mean() * T ** 2), rel=1e-6)   # entropy at u = t


def zscl_herding(features: np.ndarray, m: int) -> list[int]:
    """dynamic_dataset.constructExampleSet's loop by hand: np.delete of each chosen row, the position in the shrunk
    array appended (the reference then stores new_dataset[position])."""
    average = features.mean(axis=0)
    feats, out, total = features.copy(), [], None
    for k in range(min(m, len(feats))):
        if not k:
            index = int(np.argmin(np.sum((average - feats) ** 2, axis=1)))
            total = feats[index].copy()
        else:
            index = int(np.argmin(np.sum((average - (1 / (k + 1)) * (feats + total)) ** 2, axis=1)))
            total += feats[index]
        out.append(index)
        feats = np.delete(feats, index, axis=0)
    return out


def greedy_mean_matching(features: torch.Tensor, m: int) -> list[int]:
    """Herding as iCaRL defines it, by brute force over the original indices."""
    mean, chosen = features.mean(0), []
    for _ in range(m):
        best = min((i for i in range(len(features)) if i not in chosen),
                   key=lambda i: float(((mean - features[chosen + [i]].mean(0)) ** 2).sum()))
        chosen.append(best)
    return chosen


def test_herding_equals_the_reference_and_the_definition():
    g = torch.Generator().manual_seed(0)
    feats = unit(torch.randn(60, 16, generator=g))
    assert herding(feats, 25, shrinking_index=True) == zscl_herding(feats.numpy(), 25)
    assert herding(feats, 25) == greedy_mean_matching(feats.double(), 25)
    shifted = herding(feats, 25, shrinking_index=True)
    assert shifted != herding(feats, 25)              # the reference's stored images are not the chosen ones
    assert len(herding(feats[:5], 25)) == 5


def test_wiseft_interpolates_with_the_task_start_or_zero_shot():
    for anchor in ("previous", "zero-shot"):
        b = tiny_backbone()
        method = WiSEFT(facts(), alpha=0.8, anchor=anchor)
        method.attach(b, ONE_PROCESS, [], fresh=True)
        zero_shot = method.weights()
        perturb(method.clip, seed=2)                  # an earlier task's result: the start of this one
        method.begin_task(TrainContext(1, "Green", 0, 6), optimizer=None)
        start = method.weights()
        perturb(method.clip, seed=3)                  # training
        tuned = method.weights()
        method.end_task(TrainContext(1, "Green", 6, 12))
        base = start if anchor == "previous" else zero_shot
        for n, p in method.named_weights().items():   # helpers: param_q * alpha + param_k * (1 - alpha)
            assert torch.equal(p.detach(), tuned[n] * 0.8 + base[n] * (1 - 0.8)), (anchor, n)
        assert method.events[-1]["action"] == "wise-ft"


def test_zscl_weight_ensemble_is_the_running_average_of_its_snapshots(method_root, red):
    b = tiny_backbone()
    method = ZSCL(facts(data_root=str(method_root), iterations=6), reference="Reference", avg_freq=2, l2=1.0)
    method.attach(b, ONE_PROCESS, red, fresh=True)
    ctx = TrainContext(0, "Red", 0, 0)
    method.begin_task(ctx, optimizer=None)
    snapshots = [method.weights()]                    # we_model starts as the loaded model
    for step in range(1, 7):                          # after the update of iteration step - 1
        perturb(method.clip, seed=10 + step)
        ctx.step = ctx.global_step = step
        method.after_step(ctx)
        if (step - 1) % 2 == 0 or step == 6:          # iterations 0, 2, 4 and the reference's last one (6, lr 0)
            snapshots.append(method.weights())
    method.end_task(ctx)
    assert method.snapshots == 4 and method.events[-1]["snapshots"] == 4
    for n, p in method.named_weights().items():
        running = snapshots[0][n].clone()
        for count, snap in enumerate(snapshots[1:], start=1):   # helpers.merge_we, with we_n = count
            running = (running * count + snap[n]) / (1.0 + count)
        assert torch.equal(p.detach(), running), n
        assert torch.allclose(p.detach(), torch.stack([s[n] for s in snapshots]).mean(0), atol=1e-14)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    images, labels, texts, _ = batch(tiny_backbone())
    out = []
    for checkpointing in (False, True):
        method = FineTune(facts(), grad_checkpointing=checkpointing)
        method.attach(tiny_backbone(), ONE_PROCESS, [], fresh=True)
        method.module.train()
        loss = method.loss(method.module, images, labels, texts, TrainContext(0, "Red", 0, 0))
        loss.backward()
        out.append((float(loss.detach()), [p.grad for p in method.trainable_parameters()]))
    assert out[0][0] == pytest.approx(out[1][0], abs=1e-12)
    assert max(float((a - b).abs().max()) for a, b in zip(out[0][1], out[1][1])) < 1e-12
