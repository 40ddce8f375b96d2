"""Atomic file writes: a file appears under its final name only when whole.

The temporary file sits beside the target (same file system, so the rename is atomic) and is
named after the whole target name and the writing process, so `report.json` and `report.md` never
share one, nor do two ranks writing the same file.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path) -> Path:
    # one name per process: ranks of a distributed run that write the same file (config.yaml) must not rename
    # each other's temporary away
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_output(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; it becomes `path` only when the block ends without
    an error, and is removed otherwise. Writers that pick a format by suffix must be told it (the name ends .tmp).
    `durable`: flush the file to disk before the rename and the rename after it, so that a machine that goes down
    (not only a killed process) keeps either the old file or the whole new one (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        tmp.replace(path)
        if durable:
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') writes to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_directory(new: Path, target: Path) -> None:
    """Make the directory `new` the directory `target`, whose old content is then deleted. On Linux the two are
    exchanged in one rename (`renameat2(RENAME_EXCHANGE)`), so `target` is at every moment the old directory or the
    new one, whole. Where the file system refuses that, `target` is renamed away first: a kill between the two
    renames leaves no `target` (and `.NAME.old` beside it)."""
    new, target = Path(new), Path(target)
    if target.is_file():
        target.unlink()
    if not target.exists():
        new.rename(target)
        return
    try:
        _exchange(new, target)
        old = new  # the exchange left the old directory under the new one's name
    except OSError:
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
    shutil.rmtree(old)


def _exchange(first: Path, second: Path) -> None:
    """Swap two paths atomically (Linux >= 3.15); OSError where the system or the file system cannot."""
    at_current_directory, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        raise OSError("renameat2 is not available")
    if libc.renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second), exchange):
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot exchange {first} and {second}: {os.strerror(errno)}")


def stale_temporaries(directory: Path, pattern: str = "*") -> list[Path]:
    """The temporaries of `atomic_output` in `directory` (names matching `pattern`) whose writer is no longer
    alive: what a killed writer leaves behind."""
    stale = []
    for tmp in Path(directory).glob(f".{pattern}.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            stale.append(tmp)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, payload, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent))
