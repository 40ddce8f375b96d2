"""Turning a `*_shards` config value into a list of tar paths, and reading shard manifests."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import braceexpand


def resolve_shards(spec: str | Path, pattern: str = "*.tar") -> list[str]:
    """A directory (its manifest's shard list, else `pattern` inside it), a brace pattern
    (`shards/audio-{000000..000009}.tar`) or a glob -> sorted list of existing tar paths."""
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is not None and manifest.get("shards"):
            names = [entry["name"] if isinstance(entry, dict) else entry for entry in manifest["shards"]]
            shards = [str(path / name) for name in names]
        else:
            shards = sorted(str(p) for p in path.glob(pattern))
    elif "{" in spec:
        shards = list(braceexpand.braceexpand(spec))
    else:
        shards = sorted(glob.glob(spec))
    if not shards:
        raise FileNotFoundError(f"no shards found for {spec!r} (expected a shard directory, a brace pattern or a glob)")
    missing = [shard for shard in shards if not Path(shard).exists()]
    if missing:
        raise FileNotFoundError(f"shards listed for {spec!r} do not exist: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return shards


def read_manifest(directory: str | Path) -> dict | None:
    manifest_path = Path(directory) / "manifest.json"
    if not manifest_path.exists():
        return None
    try:
        return json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is not valid JSON: {err}") from None


def manifest_for(spec: str | Path) -> dict | None:
    """The manifest of the directory the shards of `spec` live in, if there is one."""
    path = Path(str(spec))
    directory = path if path.is_dir() else Path(resolve_shards(spec)[0]).parent
    return read_manifest(directory)
