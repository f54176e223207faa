"""The shipped whole-model baseline config (fine-tuning, Order I) end to end on a random ViT-B-16 (QuickGELU) at
the published scale (caps: tests/engine/published_scale.py). A file of its own so that pytest-xdist runs it beside the
MoE run (test_published_scale.py) rather than after it."""
import pytest

from published_scale import ORDER_I, fake_order_i, run_published  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_baselines_order1_runs_end_to_end_on_vit_b16(run_published, tmp_path):
    results = run_published("baselines/order1.yaml", tmp_path / "finetune")
    assert results["tasks"] == ORDER_I and len(results["matrix"]) == 11
    assert results["provenance"]["config"]["method"]["name"] == "finetune"
