"""The second design: the reference's per-task label-noise re-draw (against a hand port of grow_rl_synthetic's
`PartialImageFolder` relabelling), the fixed-pool stream, the reset control, intervals and evaluation without
autograd."""
import json
import random

import pytest
import torch

from mtil import cli
from mtil.plasticity import pilot, study
from mtil.plasticity.stream import ChunkStream, redraw_labels


def reference_relabel(targets: list[int], ratio: float, num_classes: int) -> list[int]:
    """Hand port of the reference's per-task relabelling (src/datasets/dataset.py, PartialImageFolder.__init__ and
    __getitem__), on the module-level `random` it uses: `targets` are the task's samples' labels in dataset order."""
    num_samples = len(targets)
    label_noise_indices = random.sample(range(num_samples), int(num_samples * ratio))
    noisy_labels = {}
    for index in label_noise_indices:
        original_label = targets[index]
        noisy_labels[index] = random.choice([l for l in range(num_classes) if l != original_label])  # noqa: E741
    return [noisy_labels.get(i, t) for i, t in enumerate(targets)]


@pytest.mark.parametrize("ratio,num_classes", [(0.3, 10), (1.0, 200), (0.0, 5), (0.57, 2)])
def test_redraw_matches_the_reference_task_after_task(ratio, num_classes):
    true = torch.randint(0, min(num_classes, 10), (40,), generator=torch.Generator().manual_seed(1))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    tasks = [order[:13], order[:27], order]  # retained samples first, then the task's new ones (buffer = all)
    rng = random.Random(7)
    random.seed(7)
    for seen in tasks:
        ours = redraw_labels(true, seen, ratio, num_classes, rng)
        theirs = reference_relabel(true[seen].tolist(), ratio, num_classes)
        assert ours[seen].tolist() == theirs
        unseen = torch.ones(40, dtype=torch.bool)
        unseen[seen] = False
        assert torch.equal(ours[unseen], true[unseen])  # examples not (yet) trained on keep their labels
        changed = (ours[seen] != true[seen]).sum().item()
        assert changed == int(len(seen) * ratio)  # every drawn example gets a label other than its own


def test_redraw_changes_retained_labels_at_every_chunk():
    true = torch.zeros(500, dtype=torch.long)
    rng = random.Random(0)
    first = redraw_labels(true, torch.arange(500), 1.0, 200, rng)
    second = redraw_labels(true, torch.arange(500), 1.0, 200, rng)
    assert (first != 0).all() and (second != 0).all()
    assert (first != second).float().mean() > 0.9  # a new concept at every chunk (1 / 199 agree by chance)
    with pytest.raises(Exception, match="label_noise"):
        redraw_labels(true, torch.arange(5), 1.5, 10, rng)


def test_pool_stream_trains_on_the_same_pool_at_every_chunk():
    s = ChunkStream(100, 4, seed=3, keep=30, probe=20, pool=True)
    assert len(s) == 4 and all(torch.equal(s.seen(c), s.seen(1)) for c in (2, 3, 4))
    assert torch.equal(s.chunks[3], s.seen(4)) and len(s.seen(4)) == 30
    assert not set(s.probe.tolist()) & set(s.seen(1).tolist())
    chunked = ChunkStream(100, 4, seed=3, keep=30, probe=20)
    assert set(chunked.seen(4).tolist()) == set(s.seen(1).tolist())  # the same kept examples, all at once


TINY = """
study: {chunks: 3, steps_per_chunk: 6, stream: pool}
data: {source: glyphs, num_classes: 12, per_class: 10, channels: 1, image_size: 12, max_examples: 40,
       label_noise: 1.0, label_noise_draw: per_chunk}
model: {cnn: stride2, cnn_channels: [4, 4, 16], pool: 1}
methods:
  no_expansion: {hidden: 32}
  dynamic_moe: {hidden: 32, expert: linear}
train: {batch_size: 16, log_every: 3, device: cpu, threads: 1}
diagnostics: {probe_size: 40, gap_every: 1}
eval: {batch_size: 64}
"""


@pytest.fixture
def tiny(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    return config


def test_reset_is_the_fresh_copy_and_gaps_are_paired_by_seed(tiny, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["plasticity", str(tiny), "--methods", "no_expansion,dynamic_moe_g1,reset", "--seeds", "0,1",
                     "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["study"]["seeds"] == [0, 1]  # what the summary covers
    assert results["config"]["study"]["methods"] == ["no_expansion", "dynamic_moe_g1", "reset"]
    for seed in (0, 1):
        ne = results["runs"][f"no_expansion-seed{seed}"]["chunks"]
        reset = results["runs"][f"reset-seed{seed}"]["chunks"]
        assert reset[0]["acc_new"] == ne[0]["acc_new"]  # chunk 1: the same model, the same batches
        for c in (1, 2):  # later chunks: a fresh network, weight for weight No Expansion's fresh copy
            assert reset[c]["acc_new"] == ne[c]["fresh_acc_new"]
            assert reset[c]["acc_seen"] == reset[c]["acc_new"] and reset[c]["acc_old"] is None  # one pool
    summary = results["summary"]
    for m in ("no_expansion", "dynamic_moe_g1"):
        for c in range(3):
            diffs = [results["runs"][f"reset-seed{s}"]["chunks"][c]["acc_new"]
                     - results["runs"][f"{m}-seed{s}"]["chunks"][c]["acc_new"] for s in (0, 1)]
            cell = summary[m]["gap_reset"][c]
            assert cell["mean"] == pytest.approx(sum(diffs) / 2)
            assert min(diffs) - 1e-9 <= cell["lo"] <= cell["hi"] <= max(diffs) + 1e-9
    assert "gap_reset" not in summary["reset"]
    table = (out / "table.md").read_text()
    assert "Gap to the reset control" in table and "95% bootstrap interval" in table
    cell = pilot.load_cell(out)
    assert cell["gap"][0] == [ch["gap"] for ch in results["runs"]["no_expansion-seed0"]["chunks"]]
    assert "| gap min over seeds |" in pilot.pilot_markdown([cell])


def test_labels_differ_between_chunks_in_a_run(tiny, tmp_path, monkeypatch):
    seen_labels = []
    real = study.redraw_labels

    def spy(*args):
        out = real(*args)
        seen_labels.append(out)
        return out

    monkeypatch.setattr(study, "redraw_labels", spy)
    assert cli.main(["plasticity", str(tiny), "--methods", "no_expansion", "--out", str(tmp_path / "o")]) == 0
    assert len(seen_labels) == 3 and not torch.equal(seen_labels[0], seen_labels[1])


@pytest.mark.parametrize("override", ["data.label_noise_draw=once", "data.label_noise=0"])
def test_pool_without_redrawn_labels_is_one_line(tiny, tmp_path, capsys, override):
    assert cli.main(["plasticity", str(tiny), "--set", override, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtil: error:") and "label_noise_draw=per_chunk" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_evaluation_builds_no_autograd_graph(tiny):
    cfg = study.load_config(str(tiny))
    data = study.prepare_data(cfg, torch.device("cpu"))
    model = study.build_model("no_expansion", cfg, 12)
    grad_modes = []
    model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    correct = study._evaluate(model, data, data.labels, torch.arange(20), 8)
    assert grad_modes == [False, False, False] and correct.shape == (20,) and model.training
