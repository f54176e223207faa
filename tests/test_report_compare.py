"""`mtil report` and `mtil compare` on tiny runs."""
import json

import numpy as np
import pytest

from mtil.cli import main


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, stream_root):
    from conftest import TINY_OVERRIDES
    base = tmp_path_factory.mktemp("seeds")
    args = [f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green,Blue]"]
    for seed in (0, 1):
        assert main(["run", *args, f"--set=seed={seed}", "--set=policy.name=freeze", "--out", str(base / f"freeze-seed{seed}")]) == 0
    return base


def test_report_shows_mean_std_and_forgetting_without_published_rows_for_another_stream(two_seeds, capsys):
    assert main(["report", str(two_seeds)]) == 0
    out = capsys.readouterr().out
    runs = [json.loads((two_seeds / f"freeze-seed{s}" / "results.json").read_text()) for s in (0, 1)]
    last = np.array([r["last"] for r in runs])
    assert f"{last.mean():.1f} ± {last.std(ddof=1):.1f}" in out
    assert "| freeze | 2 |" in out
    forgetting = np.array([r["forgetting"] for r in runs])
    assert "| BWT | Forgetting |" in out and f"{forgetting.mean():.1f} ± {forgetting.std(ddof=1):.1f}" in out
    assert "published" not in out   # the Red/Green/Blue stream is no MTIL order
    assert "| freeze | transfer |" in out and "| freeze | last |" in out


def test_published_rows_are_those_of_the_runs_mtil_order():
    from mtil import report
    order = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPet",
             "StanfordCars", "SUN397"]
    name, rows = report.references(order)
    assert name == "order1" and rows["MoE-Adapters"] == [68.9, 76.7, 85.0]
    assert report.references(order[:3]) == ("", {})


def test_report_csv_and_json(two_seeds, capsys):
    assert main(["report", str(two_seeds / "freeze-seed0"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    r = json.loads((two_seeds / "freeze-seed0" / "results.json").read_text())
    row = [x for x in data["table"] if x["method"] == "freeze"][0]
    assert row["avg_mean"] == pytest.approx(r["avg"]) and row["seeds"] == 1
    assert main(["report", str(two_seeds), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("method,seeds,transfer,avg,last")


def test_report_on_a_non_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]


def test_compare_runs_the_grid_then_skips_finished_cells(tmp_path, stream_root, capsys):
    from conftest import TINY_OVERRIDES
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(f"data: {{root: '{stream_root}', order: [Red, Green]}}\n")
    args = ["compare", str(cfg), "--policies", "none,merge", "--seeds", "0,1", "--out", str(tmp_path / "grid")]
    args += [f"--set={o}" for o in TINY_OVERRIDES]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| none | 2 |" in out and "| merge | 2 |" in out
    for name in ("none-seed0", "none-seed1", "merge-seed0", "merge-seed1"):
        assert json.loads((tmp_path / "grid" / name / "results.json").read_text())["complete"]
    assert (tmp_path / "grid" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamp = (tmp_path / "grid" / "merge-seed1" / "results.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "grid" / "merge-seed1" / "results.json").stat().st_mtime_ns == stamp


def test_compare_rejects_unknown_policy(tmp_path, capsys):
    assert main(["compare", "--policies", "none,prune", "--out", str(tmp_path)]) == 2
    assert "unknown policy prune" in capsys.readouterr().err
