"""`mtil.bench` and `mtil bench` on the tiny model at tiny sizes: the keys are there and the ratios are positive.
No timing is asserted (timings depend on the machine and its load)."""
import json

import pytest
import torch

from mtil import bench
from mtil.cli import main
from mtil.commands.bench import render
from mtil.model import moe

TINY = dict(model="tiny", batch=4, classes=3, experts=6, top_k=2, hidden=8, routers=3, rounds=1, steps=1, warmup=1,
            expert_grid=(2, 6), topk_grid=(1, 2), dispatch_batch=4, eval_tasks=2, eval_classes=3,
            eval_templates=2, eval_test=8, eval_train=8, eval_batch=8, eval_rounds=1, optimizer_model="tiny",
            optimizer_config=None)


@pytest.fixture(scope="module")
def result():
    return bench.run(bench.Settings(**TINY))


def test_every_section_reports_positive_ratios(result):
    t = result["train"]
    for key in ("moe_s", "dense_s", "plain_s", "frozen_forward_s", "moe_over_dense", "moe_over_plain",
                "dense_over_plain", "moe_over_frozen"):
        assert t[key] > 0, key
    d = result["dispatch"]
    assert d["speedup_forward"] > 0 and d["speedup_train"] > 0 and d["max_abs_diff"] < 1e-5
    e = result["eval"]
    assert e["eval_over_bare"] > 0 and e["row_images_per_s"] > 0 and e["bare_images_per_s"] > 0
    assert e["images_per_row"] == 2 * 8 and 0 <= e["routed_fraction"] <= 1 and e["deterministic"]
    for name in ("moe", "dense", "plain", "frozen_forward"):
        assert result["memory"][name]["peak_delta_mb"] >= 0
    assert [r["experts"] for r in result["scaling"]["experts"]] == [2, 6]
    assert [r["top_k"] for r in result["scaling"]["top_k"]] == [1, 2]
    assert all(r["step_s"] > 0 and r["over_reference"] > 0 for rows in result["scaling"].values() for r in rows)
    o = result["optimizer"]
    assert o["model"] == "mtil-tiny" and o["tensors"] == 6 * 6 and o["slot_over_torch"] > 0
    assert 0 < o["experts_stepped"] <= o["expert_slots"] == 6 * 6
    # torch keeps two moments of the trained set; SlotAdamW also its kept denominator buffer; torch allocates one
    assert o["torch_state_mb"] >= 2 * o["params_mb"] and o["slot_state_mb"] > o["torch_state_mb"]
    assert o["torch_step_alloc_mb"] > 0
    assert set(result["targets"]) == set(bench.TARGETS)
    assert result["settings"]["model"] == "mtil-tiny" and result["machine"]["torch_threads"] >= 1
    json.dumps(result)  # JSON-able as it is
    text = "\n".join(render(result))
    assert "MoE / dense" in text and "speedup" in text and "row / bare" in text and "SlotAdamW / torch" in text


def test_reference_dispatch_matches_the_vectorized_one():
    torch.manual_seed(0)
    layer = moe.MoEAdapter(16, 5, 4, 2, 1, "topk", False, 0.0, 0.1, moe.Routing())
    with torch.no_grad():
        layer.w_up.normal_(0, 0.3)
        layer.b_up.normal_(0, 0.3)
    x = torch.randn(6, 3, 16)
    idx = torch.tensor([[0, 1], [1, 4], [4, 0], [2, 2], [3, 0], [1, 3]])
    w = torch.rand(6, 2)
    torch.testing.assert_close(bench.reference_dispatch(layer, x, idx, w), layer.dispatch(x, idx, w), atol=1e-6, rtol=1e-5)


def test_projection_and_targets_from_a_result():
    r = {"train": {"moe_s": 0.5, "moe_over_dense": 1.2},
         "eval": {"row_images_per_s": 1000.0, "bare_images_per_s": 2000.0, "eval_over_bare": 0.9},
         "dispatch": {"speedup_train": 4.0, "speedup_forward": 2.0}}
    p = bench.projection(r)
    assert p["train_hours"] == pytest.approx(11 * 1000 * 0.5 / 3600)
    assert p["total_hours"] > p["train_hours"] > 0 and p["eval_hours"] > 0
    t = bench.check_targets(r)
    assert not t["train.moe_over_dense"]["met"] and t["eval.eval_over_bare"]["met"]
    assert t["dispatch.speedup_train"]["met"] and not t["dispatch.speedup_forward"]["met"]


def test_cli_bench_json_and_out_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "--model", "tiny", "--batch", "2", "--classes", "2", "--experts", "4", "--hidden", "8",
                 "--rounds", "1", "--steps", "1", "--sections", "train,dispatch", "--threads", "1", "--json",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"train", "dispatch", "settings", "machine", "targets"} and "eval" not in printed
    assert json.loads(out.read_text())["train"]["moe_over_dense"] > 0


def test_cli_bench_rejects_unknown_section(capsys):
    assert main(["bench", "--sections", "train,warp"]) == 2
    assert capsys.readouterr().err.strip().startswith("mtil: error: unknown bench section")
