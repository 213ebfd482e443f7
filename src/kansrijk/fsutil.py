"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then rename over it."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is fsynced and renamed to ``path``, else removed.

    For writers that want a path rather than bytes (``polars.DataFrame.write_parquet``, SQLite backups).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_name(path: Path) -> Path:
    """A temp path beside ``path`` that names the writing process, so ``sweep_stale_temp_files`` can tell
    a file whose writer died (kill -9, power loss) from one still being written."""
    return path.with_name(f".{path.name}.pid{os.getpid()}.tmp")


_TEMP = re.compile(r"^\..+\.pid(\d+)\.(?:[^.]*\.)?tmp$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temp file name made by ``atomic_path``/``temp_name``."""
    return _TEMP.match(name) is not None


def sweep_stale_temp_files(directory: Path) -> list[Path]:
    """Remove temp files under ``directory`` left by writers that no longer run; returns what was removed.

    Only files named by ``atomic_path``/``temp_name`` are considered; a file whose process is alive is kept
    (a reused PID keeps a stale file one more round, never removes a live one).
    """
    removed: list[Path] = []
    if not Path(directory).is_dir():
        return removed
    for candidate in Path(directory).rglob(".*.tmp"):
        match = _TEMP.match(candidate.name)
        if match is None or not candidate.is_file() or _alive(int(match.group(1))):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
