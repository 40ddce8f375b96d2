"""Atomic file writes: a file appears under its final name only when whole.

The temporary file sits beside the target (same file system, so the rename is atomic) and is
named after the whole target name and the writing process, so `report.json` and `report.md` never
share one, nor do two ranks writing the same file.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path) -> Path:
    # one name per process: ranks of a distributed run that write the same file (config.yaml) must not rename
    # each other's temporary away
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; it becomes `path` only when the block ends without
    an error, and is removed otherwise. Writers that pick a format by suffix must be told it (the name ends .tmp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, payload, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent))
