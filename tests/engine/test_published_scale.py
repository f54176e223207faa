"""The shipped MTIL configs, end to end, on the real architecture (ViT-B-16 with QuickGELU, random weights, no
download) over prepared fake datasets that carry the 11 real class lists and templates: a failure that only shows at
the published scale (class counts, templates, 11 routers per layer, the whole-model baselines' memory) shows here.

A CPU cannot afford the real text tower over 1,201 classes x their templates per step and per row (one prompt is
~10 GFLOP at 77 tokens), so the runs cap what they read with named keys that their config records:
data.max_classes (first 2 classes of each dataset), data.max_templates (first template), data.max_eval_per_dataset,
one training step per task. Everything else is the shipped config's: 22 experts, top-2, hidden 64, per-task routers,
the selector, label smoothing, the schedule, the per-task learning rates of all 11 datasets.
"""
import json

import numpy as np
import pytest
import torch

from mtil.cli import main
from mtil.data import registry
from mtil.data.prepared import save_prepared

ORDER_I = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPet",
           "StanfordCars", "SUN397"]
CAPS = ["model.pretrained=null", "model.activation=quick_gelu", "train.iterations=1", "train.batch_size=2",
        "train.final_step=false", "data.num_workers=0", "data.max_classes=2", "data.max_templates=1",
        "data.max_eval_per_dataset=1", "output.plots=false", "threads=2"]   # threads: the 2 cores of CI


@pytest.fixture(autouse=True)
def _restore_threads():
    """`threads=2` holds for the rest of a process; the other tests run on one thread (bit-repeatable)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fake_order_i(tmp_path_factory):
    """The 11 Order I datasets, prepared: every real class with a 16x16 training image, two test images."""
    root = tmp_path_factory.mktemp("published-scale-data")
    rng = np.random.default_rng(0)
    for name in ORDER_I:
        info = registry.get(name)
        n = info.num_classes
        labels = list(range(n)) + [0, 1] * 2   # the first two classes get 3 images: the selector's k = 5 needs 6
        train = (list(rng.integers(0, 255, size=(len(labels), 16, 16, 3), dtype=np.uint8)), labels)
        test = (list(rng.integers(0, 255, size=(2, 16, 16, 3), dtype=np.uint8)), [0, 1])
        save_prepared(root, name, {"train": train, "test": test}, info.classnames, info.templates)
    return root


def _run(config, root, out, *extra):
    argv = ["run", config, "--out", str(out)]
    for item in CAPS + [f"data.root={root}", *extra]:
        argv += ["--set", item]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_mtil_order1_runs_end_to_end_on_vit_b16(fake_order_i, tmp_path):
    results = _run("mtil_order1.yaml", fake_order_i, tmp_path / "moe")
    assert results["tasks"] == ORDER_I and len(results["matrix"]) == 11
    assert all(len(row) == 11 for row in results["matrix"])
    record = results["provenance"]
    assert record["backbone"]["activation"] == "quick_gelu"
    assert record["config"]["data"]["max_classes"] == 2 and record["config"]["data"]["max_templates"] == 1
    _check_experts_and_checkpoint(tmp_path / "moe")


def _check_experts_and_checkpoint(run):
    usage = np.load(run / "usage.npz")
    for tower in ("image", "text"):
        assert usage[f"{tower}_usage"].shape == (11, 12, 22)            # tasks x blocks x experts
        frozen = usage[f"{tower}_frozen"]                               # cumulative, top-2 of each task
        assert (np.diff(frozen, axis=0) >= 0).all() and (frozen[0] == 2).all() and (frozen[-1] <= 22).all()
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert not any(k.endswith("visual.conv1.weight") for k in _keys(state))   # the frozen backbone is never saved


@pytest.mark.slow
def test_baselines_order1_runs_end_to_end_on_vit_b16(fake_order_i, tmp_path):
    results = _run("baselines/order1.yaml", fake_order_i, tmp_path / "finetune")
    assert results["tasks"] == ORDER_I and len(results["matrix"]) == 11
    assert results["provenance"]["config"]["method"]["name"] == "finetune"


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}{k}"
            yield from _keys(v, f"{prefix}{k}.")
