"""Shared set-up of the method tests: a tiny fp64 CLIP to attach methods to, and a data root with a reference set
(`method_root`, a fixture: import it into a test module)."""
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtil.data.reference import save_reference
from mtil.methods import MethodFacts
from mtil.model import backbone

ONE_PROCESS = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)


def facts(**over) -> MethodFacts:
    base = dict(tasks=("Red", "Green"), iterations=6, batch_size=4, label_smoothing=0.2, final_step=True, seed=0,
                num_workers=0, bad_images="fail", data_root="unused", eval_batch_size=16)
    return MethodFacts(**{**base, **over})


def tiny_backbone(seed: int = 0):
    """mtil-tiny with random (non-trivial) weights in float64."""
    torch.manual_seed(seed)
    b = backbone.load("mtil-tiny", None)
    b.model.double()
    return b


@torch.no_grad()
def perturb(clip, scale: float = 0.02, seed: int = 1) -> None:
    """Move every trained weight away from where it was (so L2 and distillation terms are non-zero)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in clip.named_parameters():
        if name != "logit_scale":
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@pytest.fixture(scope="session")
def method_root(stream_root, tmp_path_factory):
    """The tiny stream plus a reference set `Reference` (random images, 12 sentences)."""
    root = tmp_path_factory.mktemp("method-data") / "data"
    shutil.copytree(stream_root, root)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(20)]
    save_reference(root, "Reference", images, [f"a photo of a {c} thing" for c in
                                               ("red", "green", "blue", "round", "square", "striped", "dark",
                                                "bright", "small", "large", "noisy", "plain")])
    return root
