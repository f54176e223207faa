"""Fixtures of the published-scale tests (test_published_scale*.py import them), which are split in two files so
that pytest-xdist runs their two ViT-B-16 runs on different workers.

The shipped MTIL configs, end to end, on the real architecture (ViT-B-16 with QuickGELU, random weights, no
download) over prepared fake datasets that carry the 11 real class lists and templates: a failure that only shows at
the published scale (class counts, templates, 11 routers per layer, the whole-model baselines' memory) shows there.

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
        "data.max_eval_per_dataset=1", "output.plots=false"]


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


@pytest.fixture
def run_published(fake_order_i, worker_cores):
    """Runs a shipped config under CAPS on the fake Order I data with this worker's share of the cores (more
    threads than cores slows the run several-fold); returns its results.json. `threads=N` holds for the rest of
    a process, so the thread count is restored after (the other tests run on one thread, bit-repeatable)."""
    before = torch.get_num_threads()

    def run(config, out):
        argv = ["run", config, "--out", str(out)]
        for item in CAPS + [f"data.root={fake_order_i}", f"threads={worker_cores}"]:
            argv += ["--set", item]
        assert main(argv) == 0
        return json.loads((out / "results.json").read_text())
    yield run
    torch.set_num_threads(before)
