"""Atomic file writes (temp file in the same folder, fsync, rename), torch-free: every writer in mtil uses them.

A kill at any moment leaves either the previous file or the new one, never a truncated file. A write that fails
for the file system's reason (disk full, permission denied, ...) removes its temp file, keeps the previous file
and raises one MtilError line naming the path and the reason. Ctrl-C during a write (in the main thread) lets the
write finish, then raises KeyboardInterrupt: no half-written temp file is left, and the file is whole (a second
Ctrl-C aborts the write at once, still removing the temp file).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import MtilError


class _Recording:
    """The temp file as the writer sees it: remembers the first exception its `write` raised, which libraries
    such as torch replace by their own (a RuntimeError) on the way out."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except BaseException as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt; a second SIGINT raises at once."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pending = []

    def handler(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    tmp = None
    try:
        with _ctrl_c_deferred():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, mode) as f:
                    recording = _Recording(f)
                    try:
                        write(recording)
                    except BaseException:
                        if recording.error is not None:
                            raise recording.error from None
                        raise
                    f.flush()
                    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; a run file gets the mode open() gives
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    except OSError as e:
        try:
            kept = "the previous file is kept" if path.is_file() else "nothing was written"
        except OSError:
            kept = "nothing was written"
        raise MtilError(f"cannot write {path} ({e.strerror or type(e).__name__}); {kept}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def write_json(path, obj, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_jsonl(path, rows) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def numpy_savez(path, **arrays) -> Path:
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), "wb")
