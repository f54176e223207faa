"""Archive sources: recognising a zip/tar archive given to `--from` and extracting it safely."""
from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path

from ...errors import MtilError

log = logging.getLogger(__name__)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(path: Path, dest: Path) -> Path:
    """Extract a zip/tar archive into `dest` (refusing members that would land outside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s", path)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    _inside(dest, member, path)
                z.extractall(dest)
        else:
            with tarfile.open(path) as t:
                for member in t.getmembers():
                    _inside(dest, member.name, path)
                try:
                    t.extractall(dest, filter="data")
                except TypeError:  # pragma: no cover - Python without extraction filters
                    t.extractall(dest, members=[m for m in t.getmembers() if m.isfile() or m.isdir()])
    except MtilError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise MtilError(f"cannot extract '{path}' ({type(e).__name__}: {e}); check the archive or extract it "
                        "yourself and pass the folder to --from") from None
    return dest


def _inside(dest: Path, member: str, archive: Path) -> None:
    target = (dest / member).resolve()
    if not str(target).startswith(str(dest.resolve())):
        raise MtilError(f"archive '{archive}' has a member outside its folder ({member!r}); extract it yourself")
