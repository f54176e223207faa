"""The DynamicMoE plasticity study: expansion methods, chunk stream, runner and CLI (tiny sizes, CPU)."""
import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F

from mtil import cli
from mtil.plasticity import methods as registry
from mtil.plasticity import study
from mtil.plasticity.models import mlp3_params, n_params
from mtil.plasticity.stream import ChunkStream

D, K = 16, 5  # MLP input width and classes of the unit tests


def tiny_cfg(*overrides):
    return study.load_config(None, ["methods.no_expansion.hidden=24", "methods.net2wider.start=6",
                                    "methods.net2wider.grow=3", "methods.pnn.hidden=7",
                                    "methods.plasticity_injection.hidden=5", "methods.dynamic_moe.hidden=8",
                                    *overrides])


def build_mlp(name, *overrides):
    return registry.build(name, D, K, tiny_cfg(*overrides).methods)


def train_steps(module, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = study.make_optimizer(module, tiny_cfg().train)
    for _ in range(n):
        x, y = torch.randn(32, D, generator=g), torch.randint(0, K, (32,), generator=g)
        loss = F.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


TINY_STUDY = """
study: {chunks: 2, steps_per_chunk: 3}
data: {source: sklearn_digits, num_classes: 10, channels: 1, image_size: null, max_examples: 200}
model: {cnn_channels: [4, 4, 4], pool: 1}
methods:
  no_expansion: {hidden: 12}
  net2wider: {start: 4, grow: 4}
  pnn: {hidden: 5}
  plasticity_injection: {hidden: 4}
  dynamic_moe: {hidden: 8}
train: {batch_size: 16, log_every: 2, device: cpu, threads: 1}
eval: {batch_size: 64}
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path


# ------------------------------------------------------------------------------------------ method contracts
def test_plasticity_injection_preserves_function():
    torch.manual_seed(0)
    mlp = build_mlp("plasticity_injection")
    x = torch.randn(64, D)
    for _ in range(3):
        train_steps(mlp)
        before = mlp(x).detach()
        mlp.grow()
        after = mlp(x).detach()
        assert torch.allclose(before, after, atol=1e-6, rtol=0)
        trainable = [p for p in mlp.parameters() if p.requires_grad]
        assert trainable == list(mlp.injected[-1].parameters())  # only the latest θ1 trains


def test_net2wider_parameter_counts():
    cfg = tiny_cfg()
    mlp = build_mlp("net2wider")
    for c in range(1, 5):
        w = cfg.methods.net2wider.start + (c - 1) * cfg.methods.net2wider.grow
        expected = (D + 1) * w + (w + 1) * w + (w + 1) * K
        assert n_params(mlp) == mlp.active_params() == mlp3_params(D, w, w, K) == expected
        mlp.grow()


@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("gating", ["dense", "topk"])
def test_dynamic_moe_parameter_counts(g, gating):
    h, top_k = 8 // g, 1
    mlp = build_mlp(f"dynamic_moe_g{g}", f"methods.dynamic_moe.gating={gating}", f"methods.dynamic_moe.top_k={top_k}")
    per_expert = D * h + h + h * D + D
    for c in range(1, 5):
        e = g * c
        assert mlp.num_experts == e and mlp.w_in.shape == (e, D, h) and mlp.w_out.shape == (e, h, D)
        stored = e * per_expert + e * (D + 1) + (D + 1) * K
        assert n_params(mlp) == stored
        running = e if gating == "dense" else min(top_k * g, e)
        assert mlp.active_params() == running * per_expert + e * (D + 1) + (D + 1) * K
        mlp.grow()


def test_active_params_match_autograd():
    """Parameters that reach the output (non-None gradient when everything requires grad) == active_params()."""
    for name in registry.names():
        torch.manual_seed(0)
        mlp = build_mlp(name, "methods.dynamic_moe.gating=dense")  # topk: see the next test
        for _ in range(3):
            mlp.grow()
        probe = copy.deepcopy(mlp).requires_grad_(True)
        probe(torch.randn(8, D)).sum().backward()
        reached = sum(p.numel() for p in probe.parameters() if p.grad is not None)
        assert reached == mlp.active_params(), name


def test_dynamic_moe_topk_runs_only_k_experts_per_input():
    torch.manual_seed(0)
    mlp = build_mlp("dynamic_moe_g2", "methods.dynamic_moe.gating=topk", "methods.dynamic_moe.top_k=1",
                    "methods.dynamic_moe.router_init=random")
    mlp.grow()
    mlp.grow()
    for b in range(5):
        mlp.zero_grad()
        mlp(torch.randn(1, D)).sum().backward()
        reached = (mlp.b_out.grad.abs().sum(1) > 0).sum().item()  # b_out gets gate * upstream
        assert reached == mlp.k == 2 and mlp.num_experts == 6


@pytest.mark.parametrize("gating", ["dense", "topk"])
def test_dynamic_moe_vectorized_equals_per_expert_reference(gating):
    torch.manual_seed(0)
    mlp = build_mlp("dynamic_moe_g2", f"methods.dynamic_moe.gating={gating}", "methods.dynamic_moe.top_k=1",
                    "methods.dynamic_moe.router_init=random")
    mlp.grow()
    mlp.grow()  # 6 experts, top-2 when topk
    x = torch.randn(10, D)
    probs = torch.softmax(mlp.router_logits(x), dim=1)
    ref = torch.zeros(10, D)
    for b in range(10):
        chosen = range(mlp.num_experts) if gating == "dense" else probs[b].topk(mlp.k).indices.tolist()
        for e in chosen:
            gate = probs[b, e]
            hid = torch.relu(x[b] @ mlp.w_in[e] + mlp.b_in[e])
            ref[b] += gate * (hid @ mlp.w_out[e] + mlp.b_out[e])
    assert torch.allclose(mlp.mix(x), ref, atol=1e-5)
    assert torch.allclose(mlp(x), mlp.head(torch.relu(ref)), atol=1e-5)


def test_dynamic_moe_balance_loss_reaches_the_router():
    torch.manual_seed(0)
    mlp = build_mlp("dynamic_moe_g2", "methods.dynamic_moe.gating=topk", "methods.dynamic_moe.balance_weight=0.1")
    mlp.grow()
    mlp(torch.randn(32, D))
    aux = mlp.extra_loss()
    assert aux is not None and aux.item() > 0
    aux.backward()
    assert mlp.router_w.grad.abs().sum() > 0
    mlp.eval()
    mlp(torch.randn(4, D))
    assert mlp.extra_loss() is None  # only training passes add the loss


def test_pnn_earlier_columns_frozen():
    torch.manual_seed(0)
    mlp = build_mlp("pnn")
    train_steps(mlp)
    mlp.grow()
    mlp.grow()
    earlier = [p.detach().clone() for c in mlp.columns[:-1] for p in c.parameters()]
    last = [p.detach().clone() for p in mlp.columns[-1].parameters()]
    train_steps(mlp, n=5)
    now = [p for c in mlp.columns[:-1] for p in c.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(earlier, now))
    assert all(not torch.equal(a, b) for a, b in zip(last, mlp.columns[-1].parameters()))


@pytest.mark.parametrize("name", registry.names())
def test_optimizer_covers_new_parameters_after_every_expansion(name):
    torch.manual_seed(0)
    mlp = build_mlp(name)
    opt = train_steps(mlp, n=1)
    for _ in range(3):
        before_ids = {id(p) for p in mlp.parameters()}
        mlp.grow()
        opt = study.make_optimizer(mlp, tiny_cfg().train, old=opt)
        in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
        trainable = [p for p in mlp.parameters() if p.requires_grad]
        assert in_opt == {id(p) for p in trainable}
        new = [p for p in trainable if id(p) not in before_ids]
        if name != "no_expansion":
            assert new, "an expansion must add (or replace) trainable parameters"
        snapshot = [p.detach().clone() for p in new]
        x, y = torch.randn(32, D), torch.randint(0, K, (32,))
        opt.zero_grad()
        F.cross_entropy(mlp(x), y).backward()
        opt.step()
        assert all(not torch.equal(a, b) for a, b in zip(snapshot, new))


def test_keep_optimizer_state_carries_old_block():
    torch.manual_seed(0)
    mlp = build_mlp("net2wider")
    cfg = tiny_cfg("train.keep_optimizer_state=true")
    opt = study.make_optimizer(mlp, cfg.train)
    F.cross_entropy(mlp(torch.randn(8, D)), torch.randint(0, K, (8,))).backward()
    opt.step()
    old_w, old_avg = mlp.l2.weight, opt.state[mlp.l2.weight]["exp_avg"].clone()
    mlp.grow()
    opt = study.make_optimizer(mlp, cfg.train, old=opt)
    avg = opt.state[mlp.l2.weight]["exp_avg"]
    assert avg.shape == mlp.l2.weight.shape
    assert torch.equal(avg[: old_w.shape[0], : old_w.shape[1]], old_avg)
    assert avg[old_w.shape[0]:].abs().sum() == 0


# ------------------------------------------------------------------------------------------ stream
def test_chunk_sampler_retains_earlier_chunks():
    stream = ChunkStream(1000, 10, seed=3)
    all_idx = torch.cat(stream.chunks)
    assert len(torch.unique(all_idx)) == 1000  # disjoint and complete
    g = torch.Generator().manual_seed(0)
    for c in (1, 4, 10):
        batch = stream.sample(c, 4096, g)
        owner = torch.full((1000,), -1)
        for k, chunk in enumerate(stream.chunks, start=1):
            owner[chunk] = k
        chunks_drawn = set(owner[batch].tolist())
        assert chunks_drawn <= set(range(1, c + 1))
        assert chunks_drawn == set(range(1, c + 1))  # earlier chunks are drawn, not only the newest


# ------------------------------------------------------------------------------------------ CLI end to end
def test_every_method_end_to_end_two_chunks(tiny_config, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["plasticity", str(tiny_config), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == registry.names()
    for name in registry.names():
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
    assert cli.main(["plasticity", "--params"]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert f"| {registry.label(name)} |" in out
    assert "vs No Expansion" in out


def test_paper_config_is_parameter_matched():
    cfg = study.load_config("plasticity/tinyimagenet.yaml")
    assert cfg.study.chunks == 10 and cfg.study.steps_per_chunk == 50000
    for cfg in (cfg, study.load_config(None)):
        for row in study.param_rows(cfg, list(cfg.study.methods)):
            assert 0.94 < row["ratio"] < 1.06, row


@pytest.mark.parametrize("argv", [["--set", "train.lrr=1"], ["--methods", "no_expansion,bogus"], ["--seeds", "a"],
                                  ["--set", "methods.dynamic_moe.gating=hard"]])
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
    code = cli.main(["plasticity", "plasticity/tinyimagenet.yaml", "--methods", "dynamic_moe_g2,pnn", "--out", str(out),
                     "--set", f"data.root={tmp_path}", "--set", "data.num_classes=3", "--set", "data.image_size=8",
                     "--set", "study.chunks=2", "--set", "study.steps_per_chunk=2", "--set", "train.batch_size=8",
                     "--set", "methods.dynamic_moe.hidden=8", "--set", "methods.pnn.hidden=4"])
    assert code == 0
    run = json.loads((out / "results.json").read_text())["runs"]["pnn-seed0"]
    assert [c["chunk"] for c in run["chunks"]] == [1, 2]
