"""Reliability: kill -9 at chosen points then --resume ends with an uninterrupted run's matrix, bit for bit; no
kill leaves a truncated output; a failing write leaves the old file; two processes compute what one does.

The kill points are found by watching the run from outside (the checkpoint file appearing, a log line on stderr).
A kill *inside* a file write is made deterministic by a `sitecustomize` module put on the child's PYTHONPATH by
the test (no library code knows about it): when MTIL_TEST_PAUSE_WRITE=<file name>:<n>, the n-th atomic write of
that file writes half of its bytes into the temp file, says so on stderr and sleeps, and the test kills it there.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtil.cli import main
from mtil.engine import checkpoint as run_checkpoint
from mtil.errors import MtilError
from mtil.rundir import files

PAUSE_HOOK = textwrap.dedent('''
    import os
    _spec = os.environ.get("MTIL_TEST_PAUSE_WRITE")
    if _spec:
        import io, sys, time
        import mtil.rundir.files as _ck
        _name, _nth = _spec.rsplit(":", 1)
        _original, _seen = _ck.atomic_write, [0]

        def atomic_write(path, write, mode):
            if os.path.basename(str(path)) == _name:
                _seen[0] += 1
                if _seen[0] == int(_nth):
                    def half(f):
                        buf = io.BytesIO() if "b" in mode else io.StringIO()
                        write(buf)
                        data = buf.getvalue()
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                        sys.stderr.write("TEST-PAUSED-IN-WRITE %s\\n" % path)
                        sys.stderr.flush()
                        time.sleep(600)
                    return _original(path, half, mode)
            return _original(path, write, mode)
        _ck.atomic_write = atomic_write
''')

TIMEOUT = 240


def tiny_args(root, *extra):
    from conftest import TINY_OVERRIDES
    return ([f"--set={o}" for o in TINY_OVERRIDES]
            + [f"--set=data.root={root}", "--set=data.order=[Red,Green,Blue]", "--set=policy.name=merge",
               "--set=train.checkpoint_every=2"] + list(extra))


def child_env(tmp_path, **extra):
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(PAUSE_HOOK)
    env = {k: v for k, v in os.environ.items() if k != "MTIL_TEST_PAUSE_WRITE"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(hooks), str(Path(__file__).resolve().parents[2])]
                                          + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.update(extra)
    return env


class Child:
    """`python -m mtil run ...` with its stderr read line by line in a thread."""

    def __init__(self, argv, env, cwd):
        self.proc = subprocess.Popen([sys.executable, "-m", "mtil", "run", *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, event, what: str):
        """Poll until event(line or None) is true; a line event sees every stderr line, a file event runs every 5 ms."""
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.005)
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"the run ended (rc={self.proc.wait()}) before {what}:\n{''.join(self.log[-30:])}")
            if line:
                self.log.append(line)
            if event(line):
                return
        self.kill()
        raise AssertionError(f"timed out waiting for {what}:\n{''.join(self.log[-30:])}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        assert self.proc.returncode == -signal.SIGKILL

    def finish(self) -> int:
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        while True:
            line = self.lines.get()
            if line is None:
                break
            self.log.append(line)
        return self.proc.returncode


def state(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def check_outputs_parse(out: Path) -> dict:
    """Every output file (temp files aside) parses completely; returns what they say. The TensorBoard curves
    (tensorboard/, append-only event files; a resume hides points logged after the checkpoint) are not outputs."""
    seen = {}
    names = {p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
             and "tensorboard" not in p.relative_to(out).parts}
    assert names <= {"config.yaml", "results.json", "events.jsonl", "usage.npz", "last.pt"}, names
    yaml.safe_load((out / "config.yaml").read_text())
    if (out / "results.json").exists():
        seen["rows"] = len(json.loads((out / "results.json").read_text())["matrix"])
    if (out / "events.jsonl").exists():
        seen["events"] = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    if (out / "usage.npz").exists():
        with np.load(out / "usage.npz") as z:
            seen["usage"] = {k: z[k] for k in z.files}
    if (out / "checkpoints" / "last.pt").exists():
        s = state(out)
        assert s["format"] == run_checkpoint.FORMAT
        seen["progress"] = (s["progress"]["task"], s["progress"]["phase"], s["progress"]["step"])
    return seen


def temp_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*.tmp"))


@pytest.mark.slow
def test_kill_9_at_four_points_then_resume_gives_the_same_matrix(tmp_path):
    """One run, killed (SIGKILL) during a task's training, during evaluation, inside a checkpoint write and inside
    a results.json write, resumed after each kill, ends with the uninterrupted run's matrix, events and usage."""
    from conftest import make_stream
    root = tmp_path / "stream"
    make_stream(root, test=96)  # an evaluation long enough (~1 s) to be caught by a log line
    out = tmp_path / "killed"
    args = tiny_args(root, "--out", str(out))
    env = child_env(tmp_path)
    # the uninterrupted reference, in a child too, while the first kill is set up
    ref = Child(tiny_args(root, "--out", str(tmp_path / "ref")), env, tmp_path)
    kills = []

    # 1. during training of task 1: as soon as its first mid-task checkpoint exists
    c = Child(args, env, tmp_path)
    c.wait_for(lambda line: (out / "checkpoints" / "last.pt").exists(), "the first mid-task checkpoint")
    c.kill()
    seen = check_outputs_parse(out)
    assert seen["progress"][:2] == (0, "train") and 0 < seen["progress"][2] < 6, seen["progress"]
    kills.append(("training", seen["progress"]))

    # 2. during the evaluation after task 1 (task trained and saved, row not yet recorded)
    c = Child([*args, "--resume"], env, tmp_path)
    c.wait_for(lambda line: "task 1/3 Red trained" in line, "the end of task 1's training")
    c.kill()
    seen = check_outputs_parse(out)
    assert seen["progress"][:2] == (0, "trained") and seen["rows"] == 0, seen
    kills.append(("evaluation", seen["progress"]))

    # 3. inside a checkpoint write: resumed at task 1's evaluation, writes 1 = after that evaluation,
    #    2 = task 2 step 2, 3 = task 2 step 4 -> killed there with half of the bytes in the temp file
    earlier = temp_files(out)
    c = Child([*args, "--resume"], child_env(tmp_path, MTIL_TEST_PAUSE_WRITE="last.pt:3"), tmp_path)
    c.wait_for(lambda line: "TEST-PAUSED-IN-WRITE" in line, "the paused checkpoint write")
    c.kill()
    partial = [p for p in temp_files(out) if p not in earlier]
    assert [p.name.startswith(".last.pt.") for p in partial] == [True], partial
    with pytest.raises(Exception):
        torch.load(partial[0], weights_only=False)  # the interrupted write: truncated, and never read by mtil
    seen = check_outputs_parse(out)
    assert seen["progress"] == (1, "train", 2) and seen["rows"] == 1, seen
    kills.append(("checkpoint write", seen["progress"]))

    # 4. inside a results.json write: a resume first rewrites the outputs from the checkpoint, then every save
    #    writes the checkpoint, then results.json; resumed at task 2 step 2, writes 1 = the resume's rewrite,
    #    2 = step 4, 3 = task 2 trained, 4 = after task 2's evaluation (row 2 in the checkpoint)
    c = Child([*args, "--resume"], child_env(tmp_path, MTIL_TEST_PAUSE_WRITE="results.json:4"), tmp_path)
    c.wait_for(lambda line: "TEST-PAUSED-IN-WRITE" in line, "the paused results.json write")
    c.kill()
    seen = check_outputs_parse(out)
    assert seen["rows"] == 1 and seen["progress"] == (2, "train", 0), seen  # results.json: the previous version
    kills.append(("results.json write", seen["progress"]))

    # resume to the end
    c = Child([*args, "--resume"], env, tmp_path)
    assert c.finish() == 0, "".join(c.log[-30:])
    assert ref.finish() == 0, "".join(ref.log[-30:])
    final, reference = check_outputs_parse(out), check_outputs_parse(tmp_path / "ref")
    got = json.loads((out / "results.json").read_text())
    want = json.loads((tmp_path / "ref" / "results.json").read_text())
    assert got["complete"] and got["matrix"] == want["matrix"]
    assert got["params"] == want["params"] and got["selector_accuracy"] == want["selector_accuracy"]
    assert final["events"] == reference["events"] and any(e["action"] == "merge" for e in final["events"])
    assert final["usage"].keys() == reference["usage"].keys()
    for k in final["usage"]:
        np.testing.assert_array_equal(final["usage"][k], reference["usage"][k], err_msg=k)
    a, b = state(out)["adapters"], state(tmp_path / "ref")["adapters"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(kills) == 4


# ---- atomic writes ------------------------------------------------------------------------------------------------

class Boom(Exception):
    pass


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("where", ["in the writer", "at fsync", "at rename", "keyboard interrupt"])
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where):
    target = tmp_path / "results.json"
    files.write_json(target, {"rows": [[1.0]]})
    old, listing = target.read_bytes(), _listing(tmp_path)

    def writer(f):
        f.write('{"rows": [[1.0], [2')  # half a document
        if where == "in the writer":
            raise Boom
        if where == "keyboard interrupt":
            raise KeyboardInterrupt

    if where == "at fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(Boom()))
    if where == "at rename":
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Boom()))
    with pytest.raises(KeyboardInterrupt if where == "keyboard interrupt" else Boom):
        files.atomic_write(target, writer, "w")
    monkeypatch.undo()
    assert target.read_bytes() == old and _listing(tmp_path) == listing


def test_each_output_writer_keeps_the_old_file_on_failure(tmp_path):
    """The writers `Run.save` uses: a value that cannot be written raises and the previous file stays whole."""
    ck, res, ev, usage = (tmp_path / n for n in ("last.pt", "results.json", "events.jsonl", "usage.npz"))
    run_checkpoint.save({"w": torch.ones(3)}, ck)
    files.write_json(res, {"matrix": [[50.0]]})
    files.write_jsonl(ev, [{"action": "freeze"}])
    files.numpy_savez(usage, a=np.arange(3))
    before = {p: p.read_bytes() for p in (ck, res, ev, usage)}
    listing = _listing(tmp_path)

    class Unsaveable:
        def __reduce__(self):
            raise Boom("cannot pickle")

        def __array__(self, *a, **k):
            raise Boom("no array")

    with pytest.raises(Boom):
        run_checkpoint.save({"w": torch.zeros(1000), "bad": Unsaveable()}, ck)
    with pytest.raises(TypeError):
        files.write_json(res, {"matrix": object()})
    with pytest.raises(TypeError):
        files.write_jsonl(ev, [{"action": "freeze"}, {"bad": {1, 2}}])
    with pytest.raises(Boom):
        files.numpy_savez(usage, a=np.arange(3), b=Unsaveable())
    assert {p: p.read_bytes() for p in before} == before and _listing(tmp_path) == listing
    assert torch.load(ck, weights_only=False)["format"] == run_checkpoint.FORMAT and json.loads(res.read_text())["matrix"] == [[50.0]]


def test_a_write_into_an_unwritable_folder_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MtilError, match="cannot write .*results.json"):
        files.write_json(blocker / "results.json", {})
    assert _listing(tmp_path) == ["file"] and blocker.read_text() == "x"


# ---- two processes --------------------------------------------------------------------------------------------------

def _accelerate(tmp_path, args):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "mtil", "run", *args]
    env = child_env(tmp_path)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_compute_what_one_does(stream_root, tmp_path):
    """`accelerate launch --num_processes 2 --cpu -m mtil run` (gloo) vs one process, same global batch.

    Tolerance: with router noise and dropout off, the only difference is that each process takes half of the
    global batch and DDP averages the two half-batch gradients, so adapters agree to float rounding
    (atol 1e-5; here they come out bit-identical), and the matrix, the usage counts (all-reduced) and the policy
    events are equal. With noise on, each process seeds its own RNG (`set_seed(device_specific=True)`), so the
    noise draws differ from one process's and only a statistical agreement can be asked (not tested here).
    """
    args = tiny_args(stream_root, "--set=moe.noisy_gating=false", "--set=moe.dropout=0.0", "--set=policy.name=freeze")
    _accelerate(tmp_path, [*args, "--out", str(tmp_path / "two")])
    assert main(["run", *args, "--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two"))
    assert two["complete"] and two["matrix"] == one["matrix"]
    assert (tmp_path / "one" / "events.jsonl").read_text() == (tmp_path / "two" / "events.jsonl").read_text()
    with np.load(tmp_path / "one" / "usage.npz") as u1, np.load(tmp_path / "two" / "usage.npz") as u2:
        for k in u1.files:
            if k.endswith("_router"):
                np.testing.assert_allclose(u1[k], u2[k], atol=1e-5, err_msg=k)
            else:
                np.testing.assert_array_equal(u1[k], u2[k], err_msg=k)
    a, b = state(tmp_path / "one")["adapters"], state(tmp_path / "two")["adapters"]
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
    assert any(float(a[k].abs().max()) > 0 for k in a if k.endswith("w_up"))  # the adapters did train


# ---- issue 15: damaged outputs of a finished run, file modes, the way on after a NaN loss -------------------------

def test_resume_of_a_finished_run_repairs_its_outputs_from_the_checkpoint(stream_root, tmp_path, capsys):
    from mtil import rundir
    out = tmp_path / "run"
    args = ["run", *tiny_args(stream_root, "--set=data.order=[Red,Green]", "--set=train.iterations=4"), "--out", str(out)]
    assert main(args) == 0
    good = {name: (out / name).read_bytes() for name in ("events.jsonl", "usage.npz")}
    results = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text((out / "results.json").read_text()[:40])        # truncated
    (out / "events.jsonl").write_text((out / "events.jsonl").read_text() + "garbage\n")
    (out / "usage.npz").write_bytes(b"PK\x03\x04 broken")
    assert main([*args, "--resume"]) == 0
    repaired = rundir.load_run(out)   # reads and checks all four files
    assert repaired.results["matrix"] == results["matrix"] and repaired.complete
    assert {name: (out / name).read_bytes() for name in good} == good
    capsys.readouterr()


def test_run_files_get_the_mode_the_umask_gives(stream_root, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert main(["run", *tiny_args(stream_root, "--set=data.order=[Red]", "--set=train.iterations=2"),
                     "--out", str(out)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_nan_loss_then_lower_lr_and_resume_finishes(stream_root, tmp_path, capsys):
    """The NaN message's advice works: lowering train.lr_per_task of the failed task and --resume finishes the run
    from the last task boundary (the tasks before it are kept)."""
    out = tmp_path / "run"
    base = tiny_args(stream_root, "--set=data.order=[Red,Green]", "--set=train.warmup_steps=0",
                     "--set=train.iterations=3")
    assert main(["run", *base, "--set=train.lr_per_task.Green=1e30", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss became" in err and "lower train.lr_per_task.Green and continue with --resume" in err
    red_row = json.loads((out / "results.json").read_text())["matrix"][0]
    assert main(["run", *base, "--set=train.lr_per_task.Green=1e-3", "--out", str(out), "--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["matrix"][0] == red_row
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr_per_task"] == {"Green": 1e-3}
    # the lr of a task already trained may not change
    assert main(["run", *base, "--set=train.lr_per_task.Red=1e-3", "--set=train.lr_per_task.Green=1e-3",
                 "--out", str(out), "--resume"]) == 2
    assert "train.lr_per_task.Red" in capsys.readouterr().err
