"""How far a run directory is, read while it is being written or after it was interrupted: `run_status(path)`.

It reads, and never locks or writes: config.yaml (tasks, iterations), results.json (the rows done: the partial
matrix), the checkpoint's progress (task, phase, step at the last checkpoint, its tensors memory-mapped), the lock
file's record of the process that writes it (pid, command, since) and whether its lock is held now (from /proc/locks) and,
when the run logs TensorBoard curves and the package is installed, the last step they reached (which runs ahead
of the checkpoint between checkpoints).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import MtilError
from ..rundir import read
from ..rundir.claim import LOCK_FILE
from ..rundir.layout import RunDir
from . import checkpoint


def _held(lock: Path, pid: int) -> bool:
    """Whether a process holds the lock file's flock: read from /proc/locks (Linux) by the file's device and inode,
    which takes no lock; elsewhere, whether the recorded pid is a live process."""
    try:
        st = lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:   # another user's live process
            return True
        return True
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == key for f in (line.split() for line in table.splitlines()))


def _writer(path: Path) -> dict | None:
    """The lock file's record (pid, command, since) and whether the lock is held now (`alive`)."""
    lock = path / LOCK_FILE
    try:
        record = json.loads(lock.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return {**record, "alive": _held(lock, record["pid"])}


def _live_step(paths: RunDir) -> tuple[int, float] | None:
    """(last global step, its wall time) of the run's TensorBoard loss curve; None without one."""
    if not paths.tensorboard.is_dir():
        return None
    try:
        from .tracking import read_scalars
        points = read_scalars(paths.tensorboard).get("train/loss")
    except ImportError:
        return None
    if not points:
        return None
    step, _, wall = max(points)
    return step, wall


def run_status(path: str | os.PathLike) -> dict:
    """What `mtil status` shows: tasks, iterations, matrix (rows done), complete, progress (the checkpoint's, or
    None), live (global step, wall time) of the curves or None, writer (the lock file's record) or None."""
    path = Path(path)
    paths = RunDir(path)
    if not path.is_dir():
        raise MtilError(f"{path} is not a folder; {read.HINT}")
    cfg = read.read_config(path) if paths.config.exists() else {}
    results = read.read_results(path) if paths.results.exists() else None
    if results is None and not cfg:
        raise MtilError(f"{path} holds no run yet (no config.yaml, no results.json); {read.HINT}")
    tasks = list(results["tasks"]) if results else list(read._get(cfg, "data.order") or [])
    progress = checkpoint.load(paths.checkpoint, mmap=True)["progress"] if paths.checkpoint.exists() else None
    return {"path": str(path), "tasks": tasks, "iterations": read._get(cfg, "train.iterations"),
            "matrix": results["matrix"] if results else [], "complete": bool(results and results.get("complete")),
            "results": results, "progress": progress, "live": _live_step(paths), "writer": _writer(path)}


def status_lines(status: dict) -> list[str]:
    """The status as console lines: state, where it is, then the partial matrix."""
    tasks, it, rows = status["tasks"], status["iterations"], len(status["matrix"])
    writer = status["writer"]
    if status["complete"]:
        state = "finished"
    elif writer and writer["alive"]:
        state = f"running (process {writer['pid']}, mtil {writer.get('command', '?')}, since {writer.get('since', '?')})"
    else:
        state = "interrupted (no process holds its lock; continue it with --resume)"
    lines = [f"{status['path']}: {state}", f"rows done: {rows} of {len(tasks)}"]
    p = status["progress"]
    if p is not None and not status["complete"]:
        t = min(p["task"], len(tasks) - 1)
        lines.append(f"last checkpoint: task {p['task'] + 1}/{len(tasks)} ({tasks[t]}), phase {p['phase']}, step "
                     f"{p['step']}" + (f"/{it}" if it else "") + f", global step {p['global_step']}")
    live = status["live"]
    if live is not None and not status["complete"]:
        step, wall = live
        where = f" (task {min(step - 1, it * len(tasks) - 1) // it + 1}, step {(step - 1) % it + 1})" if it and step else ""
        lines.append(f"curves: global step {step}{where}, logged {time.strftime('%H:%M:%S', time.localtime(wall))}")
    return lines
