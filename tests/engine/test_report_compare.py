"""`mtil report` and `mtil compare` on tiny runs."""
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

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
    assert "| freeze | Transfer |" in out and "| freeze | Avg |" in out and "| freeze | Last |" in out


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
    out = capsys.readouterr().out
    assert out.startswith("method,seeds,transfer,transfer_std,avg,avg_std,last,last_std")
    row = next(r for r in csv.reader(io.StringIO(out)) if r and r[0] == "freeze")
    assert float(row[4]) == pytest.approx(np.mean([json.loads((two_seeds / f"freeze-seed{s}" / "results.json")
                                                              .read_text())["avg"] for s in (0, 1)]), abs=1e-4)


def test_report_on_a_non_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing does not exist" in err[0]


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
    assert ("reused 4 finished cell(s) with the same resolved config: none-seed0, none-seed1, merge-seed0, "
            "merge-seed1") in capsys.readouterr().out
    # a damaged results.json of a finished cell is rewritten from its checkpoint by a resume, not reused or fatal
    damaged = tmp_path / "grid" / "none-seed1" / "results.json"
    good = json.loads(damaged.read_text())
    damaged.write_text(damaged.read_text()[:30])
    assert main(args) == 0
    assert "reused 3 finished cell(s)" in capsys.readouterr().out
    assert json.loads(damaged.read_text())["matrix"] == good["matrix"]


def test_compare_rejects_unknown_policy(tmp_path, capsys):
    assert main(["compare", "--policies", "none,prune", "--out", str(tmp_path)]) == 2
    assert "unknown policy prune" in capsys.readouterr().err


# ---- issue 15: report over hand-made run directories (no training needed) ----------------------------------------

MTIL_ORDER2 = ["StanfordCars", "Food101", "MNIST", "OxfordPet", "Flowers102", "SUN397", "Aircraft", "Caltech101",
               "DTD", "EuroSAT", "CIFAR100"]


def fake_run(path: Path, matrix, tasks, *overrides, complete=True, record=True, **extra) -> Path:
    """A run directory as `mtil run` leaves it: results.json (matrix, no trusted summary, the provenance record of
    the config; `record=False`: none, as an earlier mtil wrote it) and config.yaml."""
    from mtil import config, provenance
    path.mkdir(parents=True)
    cfg = config.load(None, [f"data.order=[{','.join(tasks)}]", *overrides])
    (path / "config.yaml").write_text(config.dump(cfg))
    rec = {"provenance": provenance.record(cfg, {})} if record else {}
    (path / "results.json").write_text(json.dumps({"tasks": list(tasks), "matrix": matrix, "complete": complete,
                                                   **rec, **extra}))
    return path


def report_out(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["report", *map(str, argv)]) == 0
    return capsys.readouterr().out


def test_zero_shot_order2_prints_as_published_with_avg_rows(tmp_path, capsys):
    """The zero-shot matrix (every row = ZSCL's zero-shot accuracies) in Order II: transfer 65.35 prints 65.4 as
    ZSCL's np.around does; every number comes from the matrix, not from the (wrong) stored summary."""
    acc = yaml.safe_load((Path(__file__).parents[2] / "mtil" / "references.yaml").read_text())
    row = [acc["zero_shot_accuracy"][t] for t in MTIL_ORDER2]
    run = fake_run(tmp_path / "zero-shot", [row] * 11, MTIL_ORDER2, "eval.mode=zero-shot",
                   transfer=1.0, avg=2.0, last=3.0, bwt=4.0, forgetting=5.0)   # a hand-edited summary
    out = report_out(capsys, run)
    assert "| zero-shot | 1 | 65.4 | 65.3 | 65.3 | 0.0 | 0.0 |" in out
    assert "| Zero-shot CLIP (published, ViT-B/16, order2) |  | 65.4 | 65.3 | 65.3 |" in out
    assert "| method | metric | " + " | ".join(MTIL_ORDER2) + " | Average |" in out
    assert "| zero-shot | Transfer | - | 88.5 |" in out and out.count("| zero-shot | Avg | 64.7 | 88.5 |") == 1
    assert "| zero-shot | Last | 64.7 |" in out and "| 68.2 | 65.4 |" in out


def test_round_half_to_even_on_the_binary_value():
    from mtil.report import fmt
    assert fmt(np.array([65.35])) == "65.4" and fmt(np.array([0.25])) == "0.2" and fmt(np.array([74.45])) == "74.4"
    for x in (65.35, 0.25, 0.35, 74.45, 12.05):
        assert fmt(np.array([x])) == f"{np.around(x, 1):.1f}"


def test_a_run_given_twice_or_with_its_folder_counts_once(tmp_path, capsys):
    run = fake_run(tmp_path / "grid" / "freeze-seed0", [[50.0, 40.0], [45.0, 60.0]], ["Red", "Green"])
    for argv in ([run, run], [tmp_path / "grid", run], [run, tmp_path / "grid" / ".." / "grid" / "freeze-seed0"]):
        assert "| freeze | 1 | 40.0 | 48.8 | 52.5 |" in report_out(capsys, *argv)


def test_unfinished_runs_under_a_folder_are_named_and_left_out(tmp_path, capsys, caplog):
    fake_run(tmp_path / "grid" / "freeze-seed0", [[50.0, 40.0], [45.0, 60.0]], ["Red", "Green"])
    fake_run(tmp_path / "grid" / "freeze-seed1", [[50.0, 40.0]], ["Red", "Green"], "seed=1", complete=False)
    with caplog.at_level("WARNING"):
        out = report_out(capsys, tmp_path / "grid")
    assert "| freeze | 1 |" in out
    assert any("freeze-seed1 is unfinished, left out" in r.getMessage() for r in caplog.records)


def test_runs_on_two_streams_get_a_table_each(tmp_path, capsys):
    fake_run(tmp_path / "a" / "freeze", [[50.0, 40.0], [45.0, 60.0]], ["Red", "Green"])
    fake_run(tmp_path / "b" / "freeze", [[70.0, 30.0, 20.0], [65.0, 80.0, 10.0], [60.0, 75.0, 90.0]],
             ["Blue", "Red", "Green"])
    out = report_out(capsys, tmp_path / "a", tmp_path / "b")
    assert "stream: Red, Green" in out and "stream: Blue, Red, Green" in out
    assert "| freeze (data.order=['Red', 'Green']) | Last | 45.0 | 60.0 | 52.5 |" in out
    assert "| freeze (data.order=['Blue', 'Red', 'Green']) | Last | 60.0 | 75.0 | 90.0 | 75.0 |" in out
    assert "| freeze (data.order=['Blue', 'Red', 'Green']) | Transfer | - | 30.0 | 15.0 | 22.5 |" in out


def test_configs_differing_only_in_lr_get_labels_json_runs_and_numeric_csv(tmp_path, capsys):
    for lr, seed, last in (("0.001", 0, 60.0), ("0.001", 1, 62.0), ("0.01", 0, 30.0)):
        fake_run(tmp_path / f"lr{lr}" / f"freeze-seed{seed}", [[50.0, 40.0], [45.0, last]], ["Red", "Green"],
                 f"train.lr={lr}", f"seed={seed}")
    data = json.loads(report_out(capsys, tmp_path, "--format", "json"))
    assert sorted(data["runs"]) == ["freeze (train.lr=0.001)", "freeze (train.lr=0.01)"]
    assert len(data["runs"]["freeze (train.lr=0.001)"]) == 2
    rows = list(csv.reader(io.StringIO(report_out(capsys, tmp_path, "--format", "csv"))))
    slow = next(r for r in rows if r[:2] == ["freeze (train.lr=0.001)", "2"])
    assert float(slow[6]) == pytest.approx(53.0) and float(slow[7]) == pytest.approx(np.std([52.5, 53.5], ddof=1), abs=1e-4)


def test_results_without_per_dataset_or_summary_still_report(tmp_path, capsys):
    run = fake_run(tmp_path / "old", [[50.0, 40.0], [45.0, 60.0]], ["Red", "Green"])
    assert "| freeze | 1 | 40.0 | 48.8 | 52.5 |" in report_out(capsys, run)


def test_one_task_run_has_no_transfer_and_valid_json(tmp_path, capsys):
    run = fake_run(tmp_path / "single", [[50.0]], ["Red"])
    assert "| freeze | 1 | - | 50.0 | 50.0 | 0.0 | 0.0 |" in report_out(capsys, run)
    text = report_out(capsys, run, "--format", "json")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert data["table"][0]["transfer_mean"] is None and data["table"][0]["avg_mean"] == 50.0


def test_published_rows_sit_right_above_their_reproductions_with_costs(tmp_path, capsys):
    """issue 22: a run of method.name (moe/<policy> for the adapters) is printed under its published row; the
    published rows nobody reproduced come first; trainable parameters and training time are columns."""
    acc = yaml.safe_load((Path(__file__).parents[2] / "mtil" / "references.yaml").read_text())
    order1 = acc["order1"]["tasks"]
    row = [acc["zero_shot_accuracy"][t] for t in order1]
    params = [{"task": t, "trainable": 149_620_737} for t in order1]
    fake_run(tmp_path / "finetune-seed0", [row] * 11, order1, "method.name=finetune", params=params,
             train_seconds=[600.0] * 11)
    fake_run(tmp_path / "freeze-seed0", [row] * 11, order1, "policy.name=freeze", "selector.mode=batch",
             params=[{"task": t, "trainable": 1000 * (i + 1)} for i, t in enumerate(order1)])
    lines = [line for line in report_out(capsys, tmp_path).splitlines() if line.startswith("| ")][:11]
    names = [line.split(" | ")[0][2:] for line in lines]
    assert names[0] == "method" and names[1].startswith("Zero-shot CLIP (published")
    assert names.index("finetune") == names.index("Continual fine-tuning (published, ViT-B/16, order1)") + 1
    assert names.index("freeze") == names.index("MoE-Adapters (published, ViT-B/16, order1)") + 1
    assert names.index("ZSCL (published, ViT-B/16, order1)") < names.index("finetune")
    assert "| Trainable | Train time |" in lines[0]
    assert ("| 149.62M | 110.0 min | Order I | none (one model) | full | ViT-B-16 (openai) | ? | changed from "
            "baselines/order1: method.finetune.lr_per_task") in lines[names.index("finetune")]   # base.yaml's lr
    assert "| 6.0k | - | Order I | selector per batch | full |" in lines[names.index("freeze")]


def test_protocol_columns_split_groups_and_choose_the_published_rows(tmp_path, capsys):
    """issue 34: runs differing only in selector.mode are two groups; the MoE-Adapters row (a selector per test
    batch) sits only beside the per-batch run; the fine-tuning family's rows (one model, no task identity) appear
    only beside such a run; an iCaRL run's settings are marked guessed; a changed hyper-parameter is named."""
    acc = yaml.safe_load((Path(__file__).parents[2] / "mtil" / "references.yaml").read_text())
    order1 = acc["order1"]["tasks"]
    row = [acc["zero_shot_accuracy"][t] for t in order1]
    fake_run(tmp_path / "sample", [row] * 11, order1, "policy.name=freeze")
    fake_run(tmp_path / "batch", [row] * 11, order1, "policy.name=freeze", "selector.mode=batch", "seed=1")
    fake_run(tmp_path / "oracle-lr", [row] * 11, order1, "policy.name=freeze", "eval.mode=oracle", "train.lr=0.5")
    out = report_out(capsys, tmp_path)
    lines = [line for line in out.split("\n\n")[0].splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0][2:] for line in lines]
    assert "| Order | Task identity | Shots | Backbone | Activation | Settings |" in lines[0]
    groups = [n for n in names[1:] if "published" not in n]
    assert len(groups) == 3                                 # sample and batch are not averaged together
    sample = next(line for line in lines if "selector per sample" in line and "published" not in line)
    batch = next(line for line in lines if "selector per batch" in line and "published" not in line)
    assert names.index(batch.split(" | ")[0][2:]) == names.index("MoE-Adapters (published, ViT-B/16, order1)") + 1
    assert names.count("MoE-Adapters (published, ViT-B/16, order1)") == 1
    assert "changed from mtil_order1: train.lr_per_task" in sample   # base.yaml's lr, not the shipped table
    assert not any(n.startswith(("ZSCL", "LwF", "iCaRL")) for n in names)   # no one-model run in the report
    assert "Zero-shot CLIP (published, ViT-B/16, order1)" in names       # its protocol states no task identity
    oracle = next(line for line in lines if "| oracle |" in line)
    assert "changed from mtil_order1: train.lr, train.lr_per_task" in oracle
    fake_run(tmp_path / "icarl", [row] * 11, order1, "method.name=icarl")
    out = report_out(capsys, tmp_path / "icarl")
    icarl = next(line for line in out.splitlines() if line.startswith("| icarl |"))
    assert "| none (one model) |" in icarl and "guessed: iCaRL's settings are not in ZSCL's scripts" in icarl
    assert "iCaRL (published, ViT-B/16, order1)" in out and "MoE-Adapters (published" not in out
