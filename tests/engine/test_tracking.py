"""Watching a run: the TensorBoard curves a run logs (read back with tensorboard's EventAccumulator), a missing
tracker package, the quiet console, and `mtil status` on an interrupted or running run."""
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mtil import metrics
from mtil.cli import console_handler, main
from mtil.engine.tracking import read_scalars, running_metrics, selection_stats

from conftest import Interrupt, interrupt_at_row

pytest.importorskip("tensorboard")
ROOT = Path(__file__).resolve().parents[2]
LOG_EVERY = ["--set=train.log_every=2"]   # tiny runs: 6 updates per task -> points at steps 2, 4, 6 of each task


def results(out):
    return json.loads((out / "results.json").read_text())


def test_running_metrics_by_hand_and_equal_to_summarize_at_the_end():
    a = [[80.0, 10.0, 20.0, 30.0], [70.0, 90.0, 25.0, 35.0], [60.0, 85.0, 95.0, 40.0], [50.0, 80.0, 90.0, 99.0]]
    one = running_metrics(a[:1])
    assert one == pytest.approx({"avg": 35.0, "last": 35.0, "transfer": (10 + 20 + 30) / 3})
    two = running_metrics(a[:2])   # column 1 has its one row before it; columns 2, 3 the two seen so far
    assert two["transfer"] == pytest.approx((10 + (20 + 25) / 2 + (30 + 35) / 2) / 3)
    assert two["avg"] == pytest.approx(np.mean(a[:2])) and two["last"] == pytest.approx(np.mean(a[1]))
    full, s = running_metrics(a), metrics.summarize(a)
    assert {k: full[k] for k in ("transfer", "avg", "last")} == pytest.approx({k: s[k] for k in full})


def test_selection_stats_by_hand():
    counts = torch.tensor([[3, 1, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2]])
    s = selection_stats(["image.0", "image.1", "text.0"], counts)
    assert s["moe/entropy/image.0"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert s["moe/top_share/image.0"] == pytest.approx(0.75)
    assert s["moe/entropy/text.0"] == pytest.approx(math.log(4)) and s["moe/top_share/text.0"] == pytest.approx(0.25)
    assert "moe/entropy/image.1" not in s   # no selections, no point


def test_a_run_logs_loss_lr_expert_events_and_accuracy_curves(tiny_args, tmp_path):
    out = tmp_path / "run"
    assert main(["run", *tiny_args, *LOG_EVERY, "--set=policy.name=merge", "--out", str(out)]) == 0
    r, scalars = results(out), read_scalars(out / "tensorboard")
    steps = [2, 4, 6, 8, 10, 12, 14, 16, 18]   # 3 tasks x 6 updates, global steps
    for tag in ("train/loss", "train/lr", "train/loss_ce"):
        assert [p[0] for p in scalars[tag]] == steps, tag
    assert [v for _, v, _ in scalars["train/loss"]] == pytest.approx([v for _, v, _ in scalars["train/loss_ce"]])
    # the reference schedule by hand: warm-up 2 to lr 1e-2, then a cosine over the 4 updates after it
    hand = [1e-2 * n / 2 if n <= 2 else 1e-2 * 0.5 * (1 + math.cos(math.pi * (n - 1 - 2) / 4)) for n in (2, 4, 6)]
    assert [v for _, v, _ in scalars["train/lr"]] == pytest.approx(hand * 3, rel=1e-6)
    for layer in ("image.0", "text.2"):
        entropy = [v for _, v, _ in scalars[f"moe/entropy/{layer}"]]
        share = [v for _, v, _ in scalars[f"moe/top_share/{layer}"]]
        assert len(entropy) == len(share) == 9
        assert all(0 <= h <= math.log(6) + 1e-6 for h in entropy) and all(1 / 6 - 1e-6 <= s <= 0.5 + 1e-6 for s in share)  # top-2 of 6
    for task, name in enumerate(r["tasks"]):
        assert [s for s, _, _ in scalars[f"accuracy/{name}"]] == [6, 12, 18]
        assert [v for _, v, _ in scalars[f"accuracy/{name}"]] == pytest.approx([row[task] for row in r["matrix"]],
                                                                                 abs=1e-4)
    for key in ("transfer", "avg", "last"):
        points = scalars[f"metrics/{key}"]
        assert [p[0] for p in points] == [6, 12, 18] and points[-1][1] == pytest.approx(r[key], abs=1e-3)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for action in {e["action"] for e in events}:
        per_step = Counter(e["step"] for e in events if e["action"] == action)   # layers touched at each step
        assert [(s, v) for s, v, _ in scalars[f"events/{action}"]] == sorted(per_step.items()), action
    hparams = next((out / "tensorboard").glob("*/hparams.yml")).read_text()
    assert "policy.name: merge" in hparams and "train.log_every: 2" in hparams


def test_distillation_terms_are_logged(stream_root, tmp_path):
    from conftest import TINY_OVERRIDES
    from mtil.data.reference import save_reference
    root = tmp_path / "data"
    shutil.copytree(stream_root, root)
    rng = np.random.default_rng(0)
    save_reference(root, "Reference", [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(20)],
                   [f"a photo of a {c} thing" for c in ("red", "green", "blue", "round", "square", "striped")])
    out = tmp_path / "zscl"
    assert main(["run", *[f"--set={o}" for o in TINY_OVERRIDES], *LOG_EVERY, f"--set=data.root={root}",
                 "--set=data.order=[Red,Green]", "--set=method.name=zscl", "--set=method.finetune.lr=1e-3",
                 "--out", str(out)]) == 0
    scalars = read_scalars(out / "tensorboard")
    assert {"train/loss_ce", "train/loss_distill", "train/loss_l2"} <= set(scalars)
    total = [v for _, v, _ in scalars["train/loss"]]
    parts = [sum(scalars[f"train/loss_{k}"][i][1] for k in ("ce", "distill", "l2")) for i in range(len(total))]
    assert len(total) == 6 and parts == pytest.approx(total, rel=1e-4)


def test_a_missing_tracker_package_is_one_line_and_the_same_results(tiny_args, tmp_path, monkeypatch, caplog):
    assert main(["run", *tiny_args, "--out", str(tmp_path / "with")]) == 0
    assert (tmp_path / "with" / "tensorboard").is_dir()
    monkeypatch.setitem(sys.modules, "tensorboard", None)   # `import tensorboard` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level(logging.DEBUG):
        assert main(["run", *tiny_args, "--set=output.trackers=tensorboard", "--out", str(tmp_path / "without")]) == 0
    said = [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert "output.trackers=tensorboard skipped" in said[0].getMessage()
    assert "does not import" in said[0].getMessage()
    assert not (tmp_path / "without" / "tensorboard").exists()
    assert results(tmp_path / "without")["matrix"] == results(tmp_path / "with")["matrix"]


def test_the_console_shows_only_mtil_lines_and_ends_with_the_summary(stream_root, tmp_path):
    """A fresh process, as a user runs it: no third-party line (datasets' JAX notice, open_clip's root lines)."""
    from conftest import TINY_OVERRIDES
    out = tmp_path / "run"
    args = [f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green]"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mtil", "run", *args, "--out", str(out)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for line in done.stderr.splitlines():
        parts = line.split()
        assert len(parts) > 2 and parts[1].startswith("mtil"), f"not an mtil line: {line!r}"
    r = results(out)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"Transfer {r['transfer']:.2f}  Avg {r['avg']:.2f}  Last {r['last']:.2f}")
    assert f"results {out / 'results.json'}" in last and f"tensorboard --logdir {out / 'tensorboard'}" in last


@pytest.mark.parametrize("verbose", [False, True])
def test_other_libraries_lines_show_only_with_verbose(verbose):
    stream = io.StringIO()
    handler = console_handler(verbose, stream)
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("somelib").info("JAX version 0.0 available.")
        logging.getLogger().info("Loaded built-in model config.")   # open_clip logs through the root logger
        logging.getLogger("py.warnings").warning("UserWarning: something deprecated")   # logging.captureWarnings
        logging.getLogger("mtil.engine.run").info("after Red: Red=50.0")
        logging.getLogger("accelerate").error("a real error")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = stream.getvalue()
    assert "after Red" in err and "a real error" in err
    for line in ("JAX version", "built-in model config", "deprecated"):
        assert (line in err) == verbose


def test_status_of_an_interrupted_and_of_a_running_run(tiny_args, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupt_at_row(monkeypatch, 2)
    with pytest.raises(Interrupt):
        main(["run", *tiny_args, *LOG_EVERY, "--out", str(out)])
    capsys.readouterr()
    lock = out / ".mtil.lock"
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before   # the lock untouched
    assert printed[0] == f"{out}: interrupted (no process holds its lock; continue it with --resume)"
    assert printed[1] == "rows done: 1 of 3"
    # killed while evaluating task 2: the checkpoint is at task 2 trained; the curves reached global step 12
    assert printed[2] == "last checkpoint: task 2/3 (Green), phase trained, step 6/6, global step 12"
    assert printed[3].startswith("curves: global step 12 (task 2, step 6), logged ")
    row = results(out)["matrix"][0]
    assert any(line.split() == ["Red", *(f"{a:.1f}" for a in row)] for line in printed), printed
    from mtil.rundir.claim import claim
    held = claim(out, resume=True)   # another process writing it (the same lock a run takes)
    try:
        assert main(["status", str(out)]) == 0
        assert capsys.readouterr().out.splitlines()[0].startswith(f"{out}: running (process {os.getpid()}, mtil run")
    finally:
        held.release()
    monkeypatch.undo()
    assert main(["run", *tiny_args, *LOG_EVERY, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{out}: finished" and printed[-1].startswith("Transfer ")
    # the resumed run's curves: one loss point per logged step, the accuracy rows once each
    scalars = read_scalars(out / "tensorboard")
    assert [p[0] for p in scalars["accuracy/Red"]] == [6, 12, 18]
    assert sorted({p[0] for p in scalars["train/loss"]}) == [2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_status_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no run yet" in err[0]
