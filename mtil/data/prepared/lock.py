"""The staging lock: an exclusive, atomic write of `ROOT/<Name>` (build beside it, rename it in at the end)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from ...errors import MtilError
from .layout import _folder_name, dataset_dir

log = logging.getLogger(__name__)


class Staging:
    """Exclusive, atomic write of `ROOT/<name>`: build in `ROOT/.<name>.tmp`, then `commit()` renames it in.

    `work` (`ROOT/.<name>.work`) is scratch space (caches, extracted archives), removed on exit. Leaving the
    `with` block without `commit()` removes everything written and leaves an existing dataset untouched.
    """

    def __init__(self, root: str | os.PathLike, name: str, overwrite: bool = False):
        self.root = Path(root)
        self.name = name
        self.overwrite = overwrite
        self.final = self.root / name
        self.tmp = self.root / f".{name}.tmp"
        self.work = self.root / f".{name}.work"
        self._old = self.root / f".{name}.old"
        self._lock_path = self.root / f".{name}.lock"
        self._lock = None
        self._created_root = False
        self.committed = False

    def _check_target(self) -> None:
        existing = dataset_dir(self.root, self.name)
        if existing.exists() and not self.overwrite:
            raise MtilError(f"'{existing}' already exists; pass --overwrite (or overwrite=True) to replace it")
        if existing.exists() and existing != self.final:
            self.final = existing  # same dataset under another spelling: replace it in place

    def __enter__(self) -> "Staging":
        self._created_root = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MtilError(f"cannot create data root '{self.root}' ({e.strerror or e}); choose a writable --root")
        self._check_target()
        self._acquire()
        try:
            for p in (self.tmp, self.work):
                if p.exists():
                    log.info("removing %s left by an interrupted run", p)
                    shutil.rmtree(p)
            if self._old.exists() and self.final.exists():
                shutil.rmtree(self._old)
            self.work.mkdir()
        except BaseException:
            self._release()
            raise
        return self

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            return
        f = open(self._lock_path, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise MtilError(f"another process is writing '{self.final}' (lock '{self._lock_path}'); wait for it "
                            "to finish") from None
        self._lock = f

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock_path.unlink()
            self._lock.close()
            self._lock = None

    def commit(self) -> Path:
        """Move the finished `tmp` folder into place (replacing an existing dataset only with overwrite)."""
        if not (self.tmp / "dataset_dict.json").is_file():
            raise MtilError(f"internal error: nothing complete to commit in '{self.tmp}'")
        if self.final.exists():
            if not self.overwrite:
                raise MtilError(f"'{self.final}' appeared while preparing; pass --overwrite to replace it")
            os.replace(self.final, self._old)
            try:
                os.replace(self.tmp, self.final)
            except BaseException:
                os.replace(self._old, self.final)
                raise
            shutil.rmtree(self._old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)
        self.committed = True
        return self.final

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for p in (self.tmp, self.work):
                if p.exists():
                    shutil.rmtree(p, ignore_errors=True)
        finally:
            self._release()
            if not self.committed and self._created_root:
                with contextlib.suppress(OSError):
                    self.root.rmdir()  # only when empty


def staging(root: str | os.PathLike, name: str, overwrite: bool = False) -> Staging:
    """`with staging(root, name, overwrite) as st: ...; st.commit()` (see Staging)."""
    return Staging(root, _folder_name(name), overwrite)
