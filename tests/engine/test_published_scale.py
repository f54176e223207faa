"""The shipped MoE Order I config end to end on a random ViT-B-16 (QuickGELU) at the published scale: 11 datasets
with their real class lists, 22 experts per block, per-task routers, the selector (the caps and the fake data:
tests/engine/published_scale.py)."""
import numpy as np
import pytest
import torch

from published_scale import ORDER_I, fake_order_i, run_published  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_mtil_order1_runs_end_to_end_on_vit_b16(run_published, tmp_path):
    results = run_published("mtil_order1.yaml", tmp_path / "moe")
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


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}{k}"
            yield from _keys(v, f"{prefix}{k}.")
