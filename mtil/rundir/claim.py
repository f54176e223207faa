"""Claiming an output folder before writing into it: never someone else's files, never two writers at once.

`claim(out, resume)` checks and locks `out` for one process:
  * `out` must be a folder or not exist yet (it is then created), and be writable;
  * a new run goes only into a folder that is new, empty, or one mtil wrote before (it holds LOCK_FILE): a folder
    holding anything else is the user's, and is refused with one line that names some of its files;
  * `fcntl.flock` on `OUT/.mtil.lock` (which records the pid and the command) is held until `release()`: a second
    process gets one line naming the first one's pid. The kernel drops the lock when its process ends, however
    it ends, so a lock left by a killed process is never in the way; the file stays, as the mark that mtil
    writes here.
A claim is released by `release()`, or by closing the process; one released before its owner wrote anything
(`keep()`) leaves the folder as it was.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from pathlib import Path

from ..errors import MtilError

LOCK_FILE = ".mtil.lock"


class Busy(MtilError):
    """The folder is locked by another live process."""


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 160 else f"{text[:100]}...{text[-40:]} ({len(text)} characters)"


class Claim:
    """A locked output folder. Its owner calls `keep()` once it writes into the folder; a claim released without
    it leaves the folder as it found it (no lock file added, the lock file's record restored, a folder it created
    removed again)."""

    def __init__(self, out: Path, handle, created: bool, previous: str | None):
        self.out, self._handle, self.created, self._previous = out, handle, created, previous
        self._kept = False

    def keep(self) -> None:
        """The folder now holds the owner's files: the lock file stays, as the mark that mtil writes here."""
        self._kept = True

    def release(self) -> None:
        """Unlock (see the class docstring for what an unkept claim undoes)."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            if not self._kept and self._previous is None:
                (self.out / LOCK_FILE).unlink()
            elif not self._kept:
                self._handle.seek(0)
                self._handle.truncate()
                self._handle.write(self._previous)
        self._handle.close()
        self._handle = None
        if self.created and not self._kept:
            with contextlib.suppress(OSError):
                self.out.rmdir()   # only when empty


def claim(out: str | os.PathLike, resume: bool = False, command: str = "run") -> Claim:
    """Check and lock `out` (see the module docstring); one MtilError line when it cannot be used."""
    out = Path(out)
    try:
        is_file = out.exists() and not out.is_dir()
    except OSError as e:
        raise MtilError(f"--out '{_short(out)}' cannot be used ({e.strerror}); choose another --out") from None
    if is_file:
        raise MtilError(f"--out '{_short(out)}' is a file, not a folder; choose another --out")
    created = not out.exists()
    try:
        # what a new run would risk overwriting: every entry of a folder mtil has not written into before
        foreign = [] if created or resume or (out / LOCK_FILE).exists() else \
            sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if foreign:   # refused before anything (the lock file included) is written into the user's folder
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise MtilError(f"'{_short(out)}' holds files mtil did not write ({shown}); choose a new or empty --out")
        out.mkdir(parents=True, exist_ok=True)
        had_lock = (out / LOCK_FILE).exists()
        handle = open(out / LOCK_FILE, "a+")
    except OSError as e:
        raise MtilError(f"output directory '{_short(out)}' is not writable ({e.strerror}); choose another --out") \
            from None
    try:
        _lock(handle, out)
    except BaseException:
        handle.close()   # the holder's lock file stays as it is
        raise
    handle.seek(0)
    c = Claim(out, handle, created, handle.read() if had_lock else None)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command, "argv": sys.argv[1:],
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        handle.flush()
    except BaseException:
        c.release()
        raise
    return c


def _lock(handle, out: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise MtilError(f"cannot lock '{_short(out / LOCK_FILE)}' ({e.strerror}); choose another --out") from None
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        who = f"process {holder.get('pid', '?')} (mtil {holder.get('command', '?')}, since {holder.get('since', '?')})"
        raise Busy(f"'{_short(out)}' is being written by {who}; wait for it to finish or choose another --out") \
            from None
