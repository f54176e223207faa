"""Lost-plasticity diagnostics: dead units, effective rank, per-method activations, the held-out probe, the
plasticity gap's fresh copy, the glyphs source and the pilot table."""
import json
import math

import numpy as np
import pytest
import torch

from mtil import cli
from mtil.errors import MtilError
from mtil.plasticity import methods as registry
from mtil.plasticity import cost, pilot, study
from mtil.plasticity.diagnostics import dead_fraction, effective_rank
from mtil.plasticity.glyphs import CHARACTERS, render
from mtil.plasticity.stream import ChunkStream

D, H, K, C = 32, 48, 40, 3


def build_mlp(name):
    cfg = study.load_config(None, [f"study.chunks={C}", *(f"methods.{m}.hidden={H}" for m in (
        "no_expansion", "net2wider", "pnn", "plasticity_injection", "dynamic_moe"))])
    return registry.build(name, D, K, cfg.methods, cfg.study.chunks)


def test_dead_fraction_counts_units_zero_on_every_row():
    units = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert dead_fraction(units) == 0.5  # columns 0 and 3


def test_effective_rank_is_exp_entropy_of_normalised_singular_values():
    rng = np.random.default_rng(0)
    s = np.array([5.0, 3.0, 1.0, 0.5, 0.0])
    u, _ = np.linalg.qr(rng.normal(size=(64, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    features = torch.tensor(u @ np.diag(s) @ v.T)
    p = s[s > 0] / s.sum()
    assert effective_rank(features) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert effective_rank(torch.ones(8, 3)) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(8, 3)) == 0.0


@pytest.mark.parametrize("name", registry.names())
def test_activations_are_the_post_relu_units_feeding_the_output(name):
    torch.manual_seed(0)
    mlp = build_mlp(name)
    mlp.grow()  # chunk 2: PNN has two columns, Plasticity Injection one injected pair, DynamicMoE 2 g experts
    x = torch.randn(10, D)
    before = mlp(x)
    acts = mlp.activations(x)
    assert torch.equal(mlp(x), before) and mlp._trace is None  # recording changes nothing and switches off
    assert all(a.shape[0] == 10 and (a >= 0).all() for a in acts.values())
    if name == "no_expansion":
        assert torch.equal(acts["h1"], torch.relu(mlp.net[0](x)))
        assert torch.equal(acts["h2"], torch.relu(mlp.net[2](acts["h1"])))
    widths = {k: a.shape[1] for k, a in acts.items()}
    if name.startswith("dynamic_moe"):
        experts = [layer.curr for layer in mlp.layers]
        h_b = [layer.experts[0].fc1.out_features for layer in mlp.layers]
        assert widths == {"experts1": experts[0] * h_b[0], "h1": H, "experts2": experts[1] * h_b[1], "h2": H,
                          "experts3": experts[2] * h_b[2]}
    else:
        parts = {"pnn": 2, "plasticity_injection": 3}.get(name, 1)  # columns | base + θ1 + θ2
        width = mlp.width() if name == "net2wider" else H
        assert widths == {"h1": parts * width, "h2": parts * width}


def test_probe_is_held_out_and_keeps_the_chunks():
    plain = ChunkStream(1000, 5, seed=3, keep=600)
    with_probe = ChunkStream(1000, 5, seed=3, keep=600, probe=100)
    assert all(torch.equal(a, b) for a, b in zip(plain.chunks, with_probe.chunks))
    assert len(with_probe.probe) == 100 and not set(with_probe.probe.tolist()) & set(with_probe.seen(5).tolist())
    assert len(ChunkStream(1000, 5, seed=3, probe=100).seen(5)) == 900
    with pytest.raises(MtilError, match="probe_size"):
        ChunkStream(1000, 5, seed=3, keep=950, probe=100)


def test_fresh_copy_has_the_chunk_architecture_and_leaves_the_rng_alone():
    cfg = study.load_config(None, ["study.chunks=3"])
    state = torch.random.get_rng_state()
    fresh = study.fresh_copy(cfg, "pnn", 0, 3, 14, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(fresh.mlp.columns) == 3 and fresh.mlp.chunk == 3
    assert [c.active for c in fresh.mlp.columns] == [False, False, True]
    again = study.fresh_copy(cfg, "pnn", 0, 3, 14, torch.device("cpu"))
    other = study.fresh_copy(cfg, "pnn", 0, 2, 14, torch.device("cpu"))
    assert torch.equal(fresh.mlp.columns[0].embed.weight, again.mlp.columns[0].embed.weight)
    assert not torch.equal(fresh.mlp.columns[0].embed.weight, other.mlp.columns[0].embed.weight)


TINY = """
study: {chunks: 2, steps_per_chunk: 4}
data: {source: glyphs, num_classes: 12, per_class: 30, channels: 1, image_size: 12, label_noise: 0.0}
model: {cnn: stride2, cnn_channels: [4, 4, 16], pool: 1}
methods:
  no_expansion: {hidden: 32}
  net2wider: {hidden: 32}
  pnn: {hidden: 5}
  plasticity_injection: {hidden: 4}
  dynamic_moe: {hidden: 32, expert: linear}
train: {batch_size: 16, log_every: 2, device: cpu, threads: 1}
diagnostics: {probe_size: 40}
eval: {batch_size: 64}
"""


def test_results_hold_diagnostics_and_the_gap_leaves_training_unchanged(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    args = ["plasticity", str(config), "--methods", "no_expansion,pnn"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "b"), "--set", "diagnostics.gap_every=0"]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    for name in ("no_expansion", "pnn"):
        ra, rb = a["runs"][f"{name}-seed0"], b["runs"][f"{name}-seed0"]
        assert ra["train_acc"] == rb["train_acc"]  # the fresh copy trains beside, not instead
        for ca, cb in zip(ra["chunks"], rb["chunks"]):
            assert ca["acc_seen"] == cb["acc_seen"] and ca["dead"] == cb["dead"]
            assert ca["gap"] == pytest.approx(ca["fresh_acc_new"] - ca["acc_new"], abs=1e-6) and "gap" not in cb
            assert set(ca["dead"]) == {"h1", "h2"} and ca["eff_rank"] >= 1.0
        summary = a["summary"][name]
        assert len(summary["gap_mean"]) == 2 and set(summary["dead"]) == {"h1", "h2"}
    assert "Plasticity gap" in (tmp_path / "a" / "table.md").read_text()
    assert (tmp_path / "a" / "diagnostics.png").stat().st_size > 0
    assert "Plasticity gap" not in (tmp_path / "b" / "table.md").read_text()
    table = pilot.pilot_markdown([pilot.load_cell(tmp_path / "a")])
    assert "| No Expansion acc % |" in table and "| fresh copy acc % |" in table
    capsys.readouterr()
    assert pilot.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("mtil: error:")


def test_glyphs_are_seeded_class_major_and_distinct():
    x, y = render(5, 3, 16)
    assert x.shape == (15, 1, 16, 16) and x.dtype == np.uint8 and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert np.array_equal(render(5, 3, 16)[0], x)
    assert len({im.tobytes() for im in x}) == 15
    assert len(CHARACTERS) >= 200 and len(set(CHARACTERS)) == len(CHARACTERS)
    with pytest.raises(MtilError, match="classes"):
        render(len(CHARACTERS) + 1, 1, 16)


def test_cost_table_projects_every_method(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert cost.main([str(config), "--steps", "1", "--set", "study.methods=[no_expansion,pnn]"]) == 0
    out = capsys.readouterr().out
    assert "| No Expansion |" in out and "| Progressive NN |" in out and "All 2 methods x 1 seed(s)" in out
    assert cost.main([str(config), "--set", "train.lrr=1"]) == 2
    assert capsys.readouterr().err.startswith("mtil: error:")
