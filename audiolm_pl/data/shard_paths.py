"""Turning a `*_shards` config value into a list of tar paths and the manifest that describes them."""

from __future__ import annotations

import glob
from pathlib import Path

import braceexpand

from audiolm_pl.data.manifest import ShardManifest, read_manifest


def resolve_shards(spec: str | Path, pattern: str = "*.tar") -> list[str]:
    """A directory (its manifest's shard list, else `pattern` inside it), a glob, or a brace pattern
    of either (`shards/audio-{000000..000009}.tar`, `shards/{speech,real}/train`) -> existing tar paths,
    sorted within each directory or glob, in the order the braces give them."""
    spec = str(spec)
    shards = [shard for piece in braceexpand.braceexpand(spec) for shard in _shards_of(piece, pattern)]
    if not shards:
        raise FileNotFoundError(f"no shards found for {spec!r} (expected a shard directory, a brace pattern or a glob)")
    missing = [shard for shard in shards if not Path(shard).exists()]
    if missing:
        raise FileNotFoundError(f"shards listed for {spec!r} do not exist: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return shards


def _shards_of(piece: str, pattern: str) -> list[str]:
    path = Path(piece)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is not None and manifest.shards:
            return [str(path / entry.name) for entry in manifest.shards]
        return sorted(str(p) for p in path.glob(pattern))
    if glob.has_magic(piece):
        return sorted(glob.glob(piece))
    return [piece]  # a plain file name: checked for existence by the caller


def shard_directories(spec: str | Path) -> list[Path]:
    """The directories the shards of `spec` live in, in the order the spec names them."""
    path = Path(str(spec))
    if path.is_dir():
        return [path]
    return list(dict.fromkeys(Path(shard).parent for shard in resolve_shards(spec)))


def manifest_for(spec: str | Path) -> ShardManifest | None:
    """The manifest of the directory the shards of `spec` live in, if there is one. A brace pattern over
    several directories (`tokens/{speech,real}/train`) must name directories whose token specs agree."""
    directories = shard_directories(spec)
    manifests = [read_manifest(directory) for directory in directories]
    first = manifests[0]
    for directory, manifest in zip(directories[1:], manifests[1:]):
        specs = [None if m is None else m.token_specs for m in (first, manifest)]
        if specs[0] != specs[1]:
            raise ValueError(f"{spec!r} mixes shards of other token specs: {directories[0]} has {specs[0]}, "
                             f"{directory} has {specs[1]}; tokenize both with the same codec and semantic tokenizer")
    return first
