"""Atomic file writes: a file appears under its final name only when whole.

The temporary file sits beside the target (same file system, so the rename is atomic) and is
named after the whole target name, so `report.json` and `report.md` never share one.
"""

from __future__ import annotations

import json
from pathlib import Path


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def atomic_write_json(path: str | Path, payload, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent))
