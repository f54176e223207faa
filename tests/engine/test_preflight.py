"""`mtil check` (mtil.engine.preflight): every problem of a config, its prepared data and its model in one pass, one
line each; the projection table; nothing written."""
from pathlib import Path

import numpy as np
import pytest

from mtil.cli import main
from mtil.data import prepared, registry
from mtil.engine import preflight

ORDER1 = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers102", "Food101", "MNIST", "OxfordPet",
          "StanfordCars", "SUN397"]


def fake_prepared(root, name, per_class=2, test_per_class=1, size=8, classnames=None):
    """A prepared copy of registered dataset `name` with its real class list (or `classnames`), a few tiny
    class-coloured images per class (what mtil.data.fake.fake_prepared of branch 30data writes)."""
    info = registry.get(name)
    names = list(classnames or info.classnames)
    rng = np.random.default_rng(len(names))
    base = rng.integers(0, 256, size=(len(names), 3))
    splits = {}
    for split, k in (("train", per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(len(names)), k)
        noise = rng.integers(-20, 21, size=(len(labels), size, size, 3))
        splits[split] = (np.clip(base[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels.tolist())
    return prepared.save_prepared(root, registry.resolve(name), splits, names)


def tree(*roots):
    return sorted(str(p) + f":{p.stat().st_size}" for r in roots for p in Path(r).rglob("*"))


TINY = ["model.name=mtil-tiny", "model.pretrained=null", "moe.num_experts=4", "moe.hidden=8", "train.batch_size=4",
        "train.iterations=100", "data.num_workers=0", "eval.batch_size=8", "selector.max_fit_samples=8",
        "output.plots=false"]


def check(capsys, *argv):
    capsys.readouterr()
    rc = main(["check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_projects_each_task_and_writes_nothing(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    for name in ("EuroSAT", "DTD", "MNIST"):
        fake_prepared(root, name)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    rc, out, err = check(capsys, "base", "--set", f"data.root={root}", "--set", "data.order=[EuroSAT,DTD,MNIST]",
                         *[a for o in TINY for a in ("--set", o)], "--steps", "2", "--eval-images", "4",
                         "--prompts", "4")
    assert rc == 0, err
    assert tree(tmp_path) == before                         # no run directory, no file touched
    assert "timed with random weights" in out
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    assert rows["EuroSAT"][1:4] == ["20", "10", "10"] and rows["DTD"][1:4] == ["94", "47", "47"]
    assert rows["total"][1:4] == ["134", "67", "67"]
    result = preflight.Preflight("cpu", "m", "w", [preflight.TaskPlan("A", 10, 5, 10, 2),
                                                   preflight.TaskPlan("B", 10, 5, 30, 2)])
    costs = preflight.Costs(step_s=1.0, classes=10, prompt_train_s=0.01, prompt_eval_s=0.002, image_eval_s=0.01,
                            image_frozen_s=0.005, peak_mb=100.0, prompt_mb=0.5, steps=2, eval_row_s=0.0)
    from mtil import config
    cfg = config.load(None, ["data.order=[EuroSAT,DTD]", "train.iterations=100", "train.final_step=false",
                                      "selector.max_fit_samples=8"])
    preflight.project(cfg, result.tasks, costs, "selector", trains=True, cuda=True)
    a, b = result.tasks
    assert a.train_s == pytest.approx(100 * 1.0) and b.train_s == pytest.approx(100 * (1.0 + 20 * 0.01))
    # A: once (5 test + 8 fit frozen, 20 prompts zero-shot) + 2 rows (5 adapted images + 20 prompts)
    assert a.eval_s == pytest.approx(13 * 0.005 + 20 * 0.002 + 2 * (5 * 0.01 + 20 * 0.002))
    assert b.eval_s == pytest.approx(13 * 0.005 + 60 * 0.002 + 1 * (5 * 0.01 + 60 * 0.002))
    assert b.peak_mb == pytest.approx(100 + 20 * 0.5)


def test_check_lists_every_problem_in_one_pass(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    fake_prepared(root, "DTD")
    fake_prepared(root, "MNIST")
    arrow = next((root / "MNIST" / "test").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-64])            # a truncated copy
    names = list(registry.get("Flowers102").classnames)
    names[3] = "not a flower"
    fake_prepared(root, "Flowers102", classnames=names)    # a class list that is not the registry's
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    rc, out, err = check(capsys, "base", "--set", f"data.root={root}",
                         "--set", "data.order=[DTD,EuroSAT,MNIST,Flowers102]",
                         *[a for o in TINY for a in ("--set", o)], "--set", "model.name=ViT-Q-99")
    assert rc == 2 and "4 problem(s) found" in err
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4, out
    assert any("unknown model 'ViT-Q-99'" in p for p in problems)
    assert any(p.startswith("problem: EuroSAT:") and "mtil prepare EuroSAT" in p for p in problems)
    assert any(p.startswith("problem: MNIST:") and "mtil prepare MNIST" in p for p in problems)   # truncated
    assert any(p.startswith("problem: Flowers102:") and "'not a flower'" in p for p in problems)
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_check_order1_on_fake_data_with_random_vit_b_16(tmp_path, capsys, monkeypatch, worker_cores):
    """The shipped Order I config on fake datasets with the 11 real class lists and a random ViT-B-16 (no
    download): the table and exit 0. Capped hard for a CPU: one timed step of batch 2, two test images, 4 prompts."""
    root = tmp_path / "data"
    for name in ORDER1:
        fake_prepared(root, name, per_class=1, size=8)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    rc, out, err = check(capsys, "mtil_order1", "--set", f"data.root={root}", "--set", "model.pretrained=null",
                         "--set", "train.batch_size=2", "--set", "data.num_workers=0", "--set", "eval.batch_size=2",
                         "--steps", "1", "--eval-images", "2", "--prompts", "4",
                         "--set", f"threads={worker_cores}")
    print(out)
    assert rc == 0, err
    assert tree(tmp_path) == before
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    assert rows["SUN397"][3] == "397" and rows["total"][3] == str(sum(registry.get(n).num_classes for n in ORDER1))
    assert all(rows[n][4] != "-" and rows[n][5] != "-" for n in ORDER1)
