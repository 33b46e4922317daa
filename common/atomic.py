"""Atomic file writes: write under a temporary name in the same folder, fsync, rename over the target.

A reader (or a run killed half-way, `kill -9` included) sees the old file or the new one, never half of one.
The temporary name keeps the target's suffix, so writers that pick a format from it (matplotlib, Pillow,
torch) work unchanged; it starts with a dot (`.<stem>.<12 hex>.tmp<suffix>`) and is removed when the writer
fails. A process killed while writing cannot remove it: `remove_stale_temporaries` does, at the next start
of the folder's one writer. A full disk is reported as `DiskFullError`, naming the file.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write ran out of space (or quota); the target is as it was before the write."""


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` of the form `remove_stale_temporaries` recognises."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _temporary_pattern(target: str) -> re.Pattern[str]:
    stem, suffix = os.path.splitext(target)
    return re.compile(rf"\.{re.escape(stem)}\.[0-9a-f]{{12}}\.tmp{re.escape(suffix)}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`; returns `path`.

    Out of space (ENOSPC or EDQUOT anywhere in the error's chain: torch.save reports it as a RuntimeError
    whose context is the OSError) raises DiskFullError naming `path`; `path` itself is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes reach the disk before the name does
        os.replace(tmp, path)
    except Exception as exc:
        if out_of_space(exc):
            raise _disk_full(path) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ENOSPC or EDQUOT is anywhere in the error's chain (__cause__ / __context__)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_full_error(path: Path, doing: str, kept: str, where: Path | None = None,
                    code: int = errno.ENOSPC) -> DiskFullError:
    """`PATH: disk full while DOING (N MB free there); KEPT`: the one line of every full disk, the free space read
    in `where` (default: the file's folder)."""
    try:
        free = f"{shutil.disk_usage(where or path.parent).free / 1e6:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    error = DiskFullError(f"{path}: disk full while {doing} ({free}); {kept}")
    error.errno = code
    return error


def _disk_full(path: Path) -> DiskFullError:
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    return disk_full_error(path, "writing it", kept)


def remove_stale_temporaries(folder: str | os.PathLike, targets: Iterable[str]) -> list[Path]:
    """Delete the temporary files that writes of `targets` (file names in `folder`) left when their process
    was killed; returns what was deleted. Only files whose names have exactly our temporary form for one of
    these targets, only in `folder` itself: nothing we did not create. The caller must be the folder's only
    writer (hold its lock), or it would delete a live write's file."""
    folder = Path(folder)
    patterns = [_temporary_pattern(name) for name in targets]
    removed = []
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and any(p.fullmatch(entry.name) for p in patterns):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return sorted(removed)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
