"""The DynamicMoE plasticity study: expansion methods, chunk stream, runner and CLI (tiny sizes, CPU)."""
import copy
import json
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mtil import cli
from mtil.errors import MtilError
from mtil.plasticity import methods as registry
from mtil.plasticity import study
from mtil.plasticity.methods.dynamic_moe import MoELayer
from mtil.plasticity.models import mlp3_params, n_params
from mtil.plasticity.stream import ChunkStream

D, H, K, C = 32, 48, 40, 3  # MLP input width, hidden width, classes and chunks of the unit tests (g4: 12 experts)


def tiny_cfg(*overrides):
    return study.load_config(None, [f"study.chunks={C}", *(f"methods.{m}.hidden={H}" for m in (
        "no_expansion", "net2wider", "pnn", "plasticity_injection", "dynamic_moe")), *overrides])


def build_mlp(name, *overrides):
    cfg = tiny_cfg(*overrides)
    return registry.build(name, D, K, cfg.methods, cfg.study.chunks)


def train_steps(module, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = study.make_optimizer(module, tiny_cfg().train)
    for _ in range(n):
        x, y = torch.randn(32, D, generator=g), torch.randint(0, K, (32,), generator=g)
        loss = F.cross_entropy(module(x), y)
        module.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return opt


TINY_STUDY = """
study: {chunks: 2, steps_per_chunk: 3}
data: {source: sklearn_digits, num_classes: 64, channels: 1, image_size: 8, max_examples: 200}
model: {cnn: stride2, cnn_channels: [4, 4, 16], pool: 1}
methods:
  no_expansion: {hidden: 32}
  net2wider: {hidden: 32}
  pnn: {hidden: 5}
  plasticity_injection: {hidden: 4}
  dynamic_moe: {hidden: 32}
train: {batch_size: 16, log_every: 2, device: cpu, threads: 1}
eval: {batch_size: 64}
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


# ------------------------------------------------------------------------------------------ DynamicMoE vs reference
def moe_cfg(expert="bottleneck_relu", output_max_k=None, grad_max_k=None, match_active=False):
    return SimpleNamespace(expert=expert, output_max_k=output_max_k, grad_max_k=grad_max_k, match_active=match_active)


def reference_moe_forward(layer, x, out_k, grad_k):
    """The reference MoELayer.forward, transcribed by hand: a loop over the active experts on the layer's own
    modules, logits [B, E, 1], -1e8 masking, detached non-top outputs, top-1 load-balancing term."""
    e_act = layer.curr
    logits = torch.stack([x @ layer.routers[e].weight.t() + layer.routers[e].bias for e in range(e_act)], dim=1)
    outs = []
    for e in range(e_act):
        fc1, fc2 = layer.experts[e].fc1, layer.experts[e].fc2
        hid = x @ fc1.weight.t() + fc1.bias
        outs.append(hid if fc2 is None else torch.relu(hid) @ fc2.weight.t() + fc2.bias)
    outs = torch.stack(outs, dim=1)
    if e_act > out_k:
        values, indices = torch.topk(logits, out_k, dim=1)
        logits = (torch.ones_like(logits) * -1e8).scatter_(1, indices, values)
    if e_act > grad_k:
        _, indices = torch.topk(logits, grad_k, dim=1)
        mask = torch.zeros_like(logits).scatter_(1, indices, 1)
        outs = mask * outs + ((1 - mask) * outs).detach()
    probs = F.softmax(logits, dim=1)
    out = torch.sum(outs * probs, dim=1)
    _, indices = torch.topk(logits, k=1, dim=1)
    selected = torch.zeros_like(logits).scatter_(1, indices, 1).mean(dim=0)
    return out, e_act * (selected * probs.mean(dim=0)).sum()


@pytest.mark.parametrize("expert", ["bottleneck_relu", "linear"])
@pytest.mark.parametrize("out_k,grad_k", [(None, None), (2, None), (None, 2), (3, 1)])
def test_moe_layer_matches_reference_forward_and_gradients(expert, out_k, grad_k):
    torch.manual_seed(0)
    layer = MoELayer(24, 40, initial=2, max_experts=8, grow_by=2, cfg=moe_cfg(expert, out_k, grad_k))
    with torch.no_grad():  # routers strong enough that the top-k choice differs between inputs
        for r in layer.routers:
            r.weight.normal_(0, 1.0)
    layer.grow()
    layer.grow()  # 6 of 8 experts active
    layer.double()  # float64: the two summation orders then agree far below the 1e-6 bar
    ref = copy.deepcopy(layer)
    x = torch.randn(16, 24, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    proj = torch.randn(16, 40, dtype=torch.float64)
    out, bal = layer(xa)
    ref_out, ref_bal = reference_moe_forward(ref, xb, out_k or 1e10, grad_k or 1e10)
    ((out * proj).sum() + 0.7 * bal).backward()
    ((ref_out * proj).sum() + 0.7 * ref_bal).backward()
    diffs = [(out - ref_out).abs().max(), (bal - ref_bal).abs(), (xa.grad - xb.grad).abs().max()]
    for (name, p), q in zip(layer.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), name  # inactive experts get no gradient in both
        if p.grad is not None:
            diffs.append((p.grad - q.grad).abs().max())
    assert max(diffs) < 1e-6, max(diffs)
    assert all(p.grad is None for p in layer.experts[6].parameters())
    print(f"max |difference| to the reference forward, outputs and gradients: {max(diffs).item():.1e}")


def test_moe_layer_top_k_limits_outputs_and_gradients():
    torch.manual_seed(0)
    layer = MoELayer(24, 40, initial=6, max_experts=6, grow_by=2, cfg=moe_cfg(output_max_k=3, grad_max_k=1))
    x = torch.randn(1, 24)
    out, _ = layer(x)
    out.sum().backward()
    reached = [e for e, ex in enumerate(layer.experts) if ex.fc2.bias.grad.abs().sum() > 0]
    assert len(reached) == 1  # one input: only its top expert's output gets gradient


def moe_formula(h_in, h_out, experts, n_max, out_k=None):
    """Active parameters of one reference MoE layer of bottleneck experts, from its definition."""
    h_b = int(h_in * (h_out - n_max) / (h_in + h_out) / n_max)
    expert = h_in * h_b + h_b + h_b * h_out + h_out
    router = h_in + 1
    return expert * (experts if out_k is None else min(out_k, experts)) + router * experts


@pytest.mark.parametrize("config", ["plasticity/tinyimagenet.yaml", None])
def test_dynamic_moe_active_params_follow_the_formula(config):
    cfg = study.load_config(config)
    rows = {r["method"]: r for r in study.param_rows(cfg, list(cfg.study.methods))}
    d_in = study.build_model("no_expansion", cfg).cnn.out_dim
    h, k, t = cfg.methods.dynamic_moe.hidden, cfg.data.num_classes, cfg.study.chunks
    for g in (1, 2, 4):
        layers = [(d_in, h), (h, h), (h, k)]
        first = sum(moe_formula(a, b, g, t * g) for a, b in layers)
        last = sum(moe_formula(a, b, t * g, t * g) for a, b in layers)
        assert (rows[f"dynamic_moe_g{g}"]["active_first"], rows[f"dynamic_moe_g{g}"]["active_final"]) == (first, last)
    if config:  # the paper's sizes: a fully grown DynamicMoE is within 2% of No Expansion, a tenth at the start
        for g in (1, 2, 4):
            r = rows[f"dynamic_moe_g{g}"]
            assert 0.98 < r["ratio"] < 1.0 and 0.09 < r["active_first"] / rows["no_expansion"]["active_final"] < 0.11


def test_dynamic_moe_counts_with_finite_output_max_k():
    mlp = build_mlp("dynamic_moe_g2", "methods.dynamic_moe.output_max_k=3")
    n = C * 2
    for c in range(1, C + 1):
        e = 2 * c
        expected = moe_formula(D, H, e, n, 3) + moe_formula(H, H, e, n, 3) + moe_formula(H, K, e, n, 3)
        assert mlp.active_params() == expected
        mlp.grow()


def test_too_many_experts_for_the_width_is_one_clear_error():
    with pytest.raises(MtilError, match="expert width"):
        build_mlp("dynamic_moe_g4", "study.chunks=10")


# ------------------------------------------------------------------------------------------ other methods
def test_plasticity_injection_preserves_function():
    torch.manual_seed(0)
    mlp = build_mlp("plasticity_injection")
    x = torch.randn(64, D)
    for _ in range(C - 1):
        train_steps(mlp)
        before = mlp(x).detach()
        mlp.grow()
        after = mlp(x).detach()
        assert torch.allclose(before, after, atol=1e-6, rtol=0)
        trainable = [p for p in mlp.parameters() if p.requires_grad]
        assert trainable == list(mlp.injected[-1].parameters())  # only the latest θ1 trains
    assert mlp.active_params() == (2 * (C - 1) + 1) * mlp3_params(D, H, H, K)


def test_net2wider_widths_and_counts_follow_the_reference_schedule():
    mlp = build_mlp("net2wider")
    for c in range(1, C + 1):
        w = H if c == C else int(H * (1.0 / C) * c)
        assert mlp.width() == w
        assert mlp.active_params() == mlp3_params(D, w, w, K)
        assert mlp(torch.randn(3, D)).shape == (3, K)
        mlp.grow()
    assert n_params(mlp) == mlp3_params(D, H, H, K)  # allocated up front, as the reference


def test_pnn_counts_and_frozen_columns():
    torch.manual_seed(0)
    mlp = build_mlp("pnn")
    train_steps(mlp)
    mlp.grow()
    mlp.grow()
    column = lambda k: (D * H + H) + (H * H + H) + (H * K + K) + (k > 0) * (  # noqa: E731
        2 * (H * k * H + H) + (H * H + H) + (H * K + K) + 2 * H * k)
    out_part = lambda k: (H * K + K) + (H * K + K) + (H * k * H + H) + H * k  # noqa: E731
    # the reference counts column 0 whole; frozen columns k >= 1 without their output layer / adapter / scaler
    assert mlp.active_params() == column(0) + column(1) - out_part(1) + column(2)
    earlier = [p.detach().clone() for c in mlp.columns[:-1] for p in c.parameters()]
    last = [p.detach().clone() for p in mlp.columns[-1].parameters()]
    train_steps(mlp, n=5)
    now = [p for c in mlp.columns[:-1] for p in c.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(earlier, now))
    assert all(not torch.equal(a, b) for a, b in zip(last, mlp.columns[-1].parameters()))


@pytest.mark.parametrize("name", registry.names())
def test_training_moves_exactly_the_parameters_in_use(name):
    """AdamW over all parameters (as the reference), fresh gradients: what is frozen or not yet used stays unchanged."""
    torch.manual_seed(0)
    mlp = build_mlp(name)
    train_steps(mlp, n=1)
    mlp.grow()
    before = {n: p.detach().clone() for n, p in mlp.named_parameters()}
    train_steps(mlp, n=2)
    moved = {n for n, p in mlp.named_parameters() if not torch.equal(before[n], p)}
    frozen = {n for n, p in mlp.named_parameters() if not p.requires_grad}
    assert not moved & frozen
    if name.startswith("dynamic_moe"):
        g = int(name[-1])
        unused = {n for n in before if any(f"experts.{e}." in n or f"routers.{e}." in n for e in range(2 * g, C * g))}
        assert unused and not moved & unused and moved == set(before) - unused
    elif name != "no_expansion":
        assert moved


# ------------------------------------------------------------------------------------------ training setup
def test_optimizer_and_warmup_are_the_reference_ones():
    cfg = study.load_config("plasticity/tinyimagenet.yaml")
    t = cfg.train
    opt = study.make_optimizer(torch.nn.Linear(2, 2), t)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 1e-3
    setup = (t.clip_grad_norm, t.batch_size, t.crop_pad, t.hflip, t.gradients, t.amp, t.warmup_ratio)
    assert setup == (0.5, 256, 4, True, "scaler", False, 0.1)
    assert (t.scaler.init_scale, t.scaler.growth_interval) == (2.0 ** 16, 2000)
    lrs = [study.warmup_lr(t, i, 100) for i in range(12)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10:] == [1e-3, 1e-3]


def test_augment_crops_padded_windows_and_flips():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 255, (64, 3, 6, 6), dtype=torch.uint8)
    out = study.augment(images, 2, True, g)
    padded = F.pad(images, (2, 2, 2, 2))
    flips = 0
    for img, pad in zip(out, padded):
        windows = [pad[:, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
        plain = any(torch.equal(img, w) for w in windows)
        flipped = any(torch.equal(img, w.flip(-1)) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 10 < flips < 54  # about half are flipped
    assert torch.equal(study.augment(images, 0, False, g), images)


def test_chunk_batches_walk_epochs_of_the_retained_chunks():
    stream = ChunkStream(1000, 10, seed=3)
    assert len(torch.unique(torch.cat(stream.chunks))) == 1000  # disjoint and complete
    g = torch.Generator().manual_seed(0)
    batches = stream.batches(4, 64, g)
    epoch = torch.cat([next(batches) for _ in range(7)])  # 400 examples: 6 batches of 64 and one of 16
    assert sorted(epoch.tolist()) == sorted(stream.seen(4).tolist())
    assert len(next(batches)) == 64  # the next epoch starts


# ------------------------------------------------------------------------------------------ CLI end to end
def test_every_method_end_to_end_two_chunks(tiny_config, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["plasticity", str(tiny_config), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == [n for n in registry.names() if n != "reset"]  # reset: a control, not a default
    for name in results["methods"]:
        run = results["runs"][f"{name}-seed0"]
        assert len(run["chunks"]) == 2 and run["steps"][-1] == 6
        assert (out / "runs" / f"{name}-seed0.json").exists()
    for f in ("table.md", "training_accuracy.png", "training_accuracy.svg", "config.yaml"):
        assert (out / f).stat().st_size > 0


def test_resume_determinism_and_seeds(tiny_config, tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["plasticity", str(tiny_config), "--methods", "no_expansion,dynamic_moe_g2", "--seeds", "0,1"]
    assert cli.main([*args, "--out", str(a)]) == 0
    assert cli.main([*args, "--out", str(b)]) == 0
    assert (a / "results.json").read_text() == (b / "results.json").read_text()  # same seeds, same results
    summary = json.loads((a / "results.json").read_text())["summary"]["no_expansion"]
    assert summary["seeds"] == [0, 1] and len(summary["acc_seen_std"]) == 2
    finished = (a / "runs" / "no_expansion-seed0.json").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger="mtil")
    assert cli.main([*args, "--methods", "no_expansion", "--out", str(a)]) == 0  # finished runs are skipped
    assert (a / "runs" / "no_expansion-seed0.json").stat().st_mtime_ns == finished
    assert "skipping no_expansion seed 0" in caplog.text
    # a different config into the same directory is refused; nothing already written is lost
    assert cli.main([*args, "--set", "train.lr=0.5", "--out", str(a)]) == 2
    assert (a / "runs" / "no_expansion-seed0.json").stat().st_mtime_ns == finished


def test_params_prints_table(capsys):
    assert cli.main(["plasticity", "--params", "--methods", ",".join(registry.names())]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert f"| {registry.label(name)} |" in out
    assert "vs No Expansion" in out


def test_params_states_the_expert_widths(capsys):
    # relabel.yaml: MLP 512 -> 256 -> 256 -> 200, 10 chunks; by hand, N = 10 g experts per layer:
    # g4 (N = 40): int(512*216/768/40) = int(3.6) = 3, int(256*216/512/40) = int(2.7) = 2, int(256*160/456/40) = 2
    # g1 (N = 10): int(512*246/768/10) = 16, int(256*246/512/10) = 12, int(256*190/456/10) = 10
    assert cli.main(["plasticity", "plasticity/relabel.yaml", "--params", "--methods",
                     "no_expansion,dynamic_moe_g1,dynamic_moe_g4"]) == 0
    rows = {line.split(" | ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["| DynamicMoE (g4)"].endswith("| 3 / 2 / 2 |")
    assert rows["| DynamicMoE (g1)"].endswith("| 16 / 12 / 10 |")
    assert rows["| No Expansion"].endswith("| – |")


def test_paper_config_is_parameter_matched():
    cfg = study.load_config("plasticity/tinyimagenet.yaml")
    assert cfg.study.chunks == 10 and cfg.study.steps_per_chunk == 50000
    for cfg, (lo, hi) in ((cfg, (0.98, 1.01)), (study.load_config(None), (0.9, 1.05))):
        for row in study.param_rows(cfg, list(cfg.study.methods)):
            assert lo < row["ratio"] < hi, row


@pytest.mark.parametrize("argv", [["--set", "train.lrr=1"], ["--methods", "no_expansion,bogus"], ["--seeds", "a"],
                                  ["--set", "methods.dynamic_moe.expert=hard"]])
def test_bad_input_exits_2_with_one_line(argv, capsys, tmp_path):
    assert cli.main(["plasticity", *argv, "--params", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtil: error:") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_missing_prepared_dataset_is_one_clear_line(tmp_path, capsys):
    code = cli.main(["plasticity", "plasticity/tinyimagenet.yaml", "--set", f"data.root={tmp_path}",
                     "--set", "study.steps_per_chunk=1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not prepared" in err and "mtil prepare" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_prepared_format_end_to_end(tmp_path):
    """A tiny dataset in mtil's prepared format (mixed grayscale / RGB sizes, as in Tiny ImageNet) runs."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in range(30)]
    images += [Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)) for _ in range(10)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    train = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(40)]}, features=feats)
    datasets.DatasetDict({"train": train, "test": train}).save_to_disk(str(tmp_path / "TinyImageNet"))
    out = tmp_path / "o"
    code = cli.main(["plasticity", "plasticity/tinyimagenet.yaml", "--methods", "net2wider,pnn", "--out", str(out),
                     "--set", f"data.root={tmp_path}", "--set", "data.num_classes=3", "--set", "data.image_size=8",
                     "--set", "study.chunks=2", "--set", "study.steps_per_chunk=2", "--set", "train.batch_size=8",
                     "--set", "methods.net2wider.hidden=8", "--set", "methods.pnn.hidden=4",
                     "--set", "diagnostics.probe_size=8"])
    assert code == 0
    run = json.loads((out / "results.json").read_text())["runs"]["pnn-seed0"]
    assert [c["chunk"] for c in run["chunks"]] == [1, 2]
