"""`mtil study merge` on the tiny synthetic stream: cells, resumption, paired differences and diagnostics."""
import json

import numpy as np
import pytest

from mtil.cli import main


@pytest.fixture()
def study_config(tmp_path):
    (tmp_path / "pt.yaml").write_text("seed: 0\n")
    (tmp_path / "tf.yaml").write_text("moe: {router: shared}\neval: {mode: task-free}\n")
    path = tmp_path / "study.yaml"
    path.write_text(f"""study:
  settings: {{per_task: {tmp_path / 'pt.yaml'}, task_free: {tmp_path / 'tf.yaml'}}}
  arms: {{freeze: [policy.name=freeze], merge: [policy.name=merge], copy: [policy.name=merge, policy.merge.combine=copy]}}
  contrasts: [[merge, copy]]
  seeds: [0, 1]
  arm_seeds: {{copy: [0]}}
""")
    return path


@pytest.mark.slow
def test_study_runs_every_cell_once_pairs_by_seed_and_summarises_the_merges(tiny_args, study_config, tmp_path,
                                                                           capsys):
    out = tmp_path / "out"
    argv = ["study", "merge", str(study_config), "--out", str(out), *tiny_args]
    assert main([*argv, "--plan"]) == 0
    assert "10 cells, 10 to run" in capsys.readouterr().out
    assert main([*argv, "--seeds", "0", "--settings", "per_task", "--arms", "freeze,merge"]) == 0
    assert main([*argv, "--summary-only", "--settings", "per_task", "--arms", "freeze,merge", "--name", "part"]) == 0
    part = json.loads((out / "part.json").read_text())
    assert part["not_run"] == ["per_task/freeze-seed1", "per_task/merge-seed1"] and part["cells"] == 2
    assert main(argv) == 0
    summary = json.loads((out / "study.json").read_text())
    assert len(list((out / "timings").rglob("*.json"))) == 10 and summary["timed_cells"] == 10
    for setting in ("per_task", "task_free"):
        data = summary["settings"][setting]
        assert data["arms"]["copy"]["seeds"] == [0] and data["arms"]["merge"]["seeds"] == [0, 1]
        res = {(arm, s): json.loads((out / setting / f"{arm}-seed{s}" / "results.json").read_text())
               for arm in ("freeze", "merge") for s in (0, 1)}
        paired = {(p["a"], p["b"]): {r["metric"]: r for r in p["rows"]} for p in data["paired"]}
        assert set(paired) == {("merge", "freeze"), ("copy", "freeze"), ("merge", "copy")}
        for metric in ("avg", "last", "forgetting"):
            hand = [res["merge", s][metric] - res["freeze", s][metric] for s in (0, 1)]
            assert paired["merge", "freeze"][metric]["diffs"] == pytest.approx(hand)
        events = [json.loads(line) for s in (0, 1)
                  for line in (out / setting / f"merge-seed{s}" / "events.jsonl").read_text().splitlines()]
        merges = [e for e in events if e["action"] == "merge"]
        diag = data["arms"]["merge"]["diagnostics"]
        assert diag["merges_per_run"] == len(merges) / 2 > 0
        assert diag["cosine"]["mean"] == pytest.approx(np.mean([e["cosine"] for e in merges]))
        assert "merges_per_run" in data["arms"]["freeze"]["diagnostics"]
    assert (out / "study_per_task.png").exists() and "| merge - freeze | 2 |" in (out / "study.md").read_text()
    capsys.readouterr()
    assert main([*argv, "--plan"]) == 0                      # resumable: everything is done now
    assert "10 cells, 0 to run" in capsys.readouterr().out


def test_study_config_errors(study_config, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(study_config.read_text().replace("contrasts: [[merge, copy]]", "contrasts: [[merge, grow]]"))
    assert main(["study", "merge", str(bad), "--plan"]) == 2
    assert "study names arms it does not define: grow" in capsys.readouterr().err
    assert main(["study", "merge", str(study_config), "--plan", "--arms", "nope"]) == 2
    assert "unknown arm nope" in capsys.readouterr().err


def test_a_cell_another_process_is_writing_is_left_to_it(tmp_path, monkeypatch):
    from mtil.engine import compare
    from mtil.rundir.claim import Busy
    from mtil.studies import merge

    def busy(plan):
        raise Busy(f"'{plan[0][0]}' is being written by process 1")
    monkeypatch.setattr(compare, "run_plan", busy)
    cell = merge.Cell("per_task", "merge", 0, tmp_path / "per_task" / "merge-seed0", cfg=None, status="new")
    assert merge.run_cells([cell], tmp_path) == [cell]
    assert not (tmp_path / "timings").exists()
