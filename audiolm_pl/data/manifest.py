"""`manifest.json`: one schema for every shard directory, audio or tokens.

    {"format": "audiolm_pl.shards/2", "content": "audio" | "tokens", "sample_rate": 16000,
     "shards": [{"name": "audio-000000.tar", "samples": 256, "seconds": 1520.3}, ...],
     "total_samples", "total_seconds", "total_hours", "speakers": [...], "made_by": {"command", ...},
     # tokens only:
     "token_specs": {"semantic": TokenSpec, "acoustic": TokenSpec}, "producers": {"semantic", "acoustic"},
     "semantic_hash", "codec_hash"}

The two version-1 manifests that `data shards` and `tokenize` wrote before (`audiolm_pl.audio_shards/1`,
`audiolm_pl.token_shards/1`) are read too, since users hold shards made with them. Anything else (a manifest
without a `format`, shards listed as bare names) is refused with a message naming the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from audiolm_pl.fileio import atomic_write_json

FORMAT = "audiolm_pl.shards/2"
_AUDIO_V1, _TOKENS_V1 = "audiolm_pl.audio_shards/1", "audiolm_pl.token_shards/1"
CONTENTS = ("audio", "tokens")
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """A `manifest.json` this code cannot read; the message names the file and what was expected."""


@dataclass
class ShardEntry:
    name: str  # the tar's file name, relative to the manifest
    samples: int
    seconds: Optional[float] = None  # None: a version-1 token manifest did not record it


@dataclass
class ShardManifest:
    content: str  # "audio" or "tokens"
    sample_rate: int
    shards: list[ShardEntry]
    speakers: list[str] = field(default_factory=list)
    made_by: dict = field(default_factory=dict)  # the command and options that wrote the directory
    token_specs: Optional[dict] = None  # tokens: {"semantic", "acoustic"} -> TokenSpec.to_dict()
    producers: Optional[dict] = None  # tokens: {"semantic", "acoustic"} -> identity(); None in older manifests
    semantic_hash: Optional[str] = None  # tokens: file hashes of the checkpoints that made them
    codec_hash: Optional[str] = None

    def __post_init__(self):
        if self.content not in CONTENTS:
            raise ValueError(f"manifest content must be one of {CONTENTS}; got {self.content!r}")
        if self.content == "tokens" and not self.token_specs:
            raise ValueError("a token shard manifest needs token_specs {'semantic', 'acoustic'}")

    @property
    def total_samples(self) -> int:
        return sum(entry.samples for entry in self.shards)

    @property
    def total_seconds(self) -> float:
        return sum(entry.seconds or 0.0 for entry in self.shards)

    def to_dict(self) -> dict:
        payload = {"format": FORMAT, "content": self.content, "sample_rate": self.sample_rate,
                   "shards": [asdict(entry) for entry in self.shards],
                   "total_samples": self.total_samples, "total_seconds": round(self.total_seconds, 3),
                   "total_hours": round(self.total_seconds / 3600, 6), "speakers": self.speakers,
                   "made_by": self.made_by}
        optional = {"token_specs": self.token_specs, "producers": self.producers,
                    "semantic_hash": self.semantic_hash, "codec_hash": self.codec_hash}
        return {**payload, **{key: value for key, value in optional.items() if value is not None}}


def write_manifest(directory: str | Path, manifest: ShardManifest) -> Path:
    """`directory/manifest.json`, atomically."""
    return atomic_write_json(Path(directory) / MANIFEST_NAME, manifest.to_dict(), indent=1)


def read_manifest(directory: str | Path) -> ShardManifest | None:
    """The manifest of a shard directory, None when it has none; `ManifestError` when it is not one we read."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    try:
        if found == FORMAT:
            return _from_v2(payload)
        if found == _AUDIO_V1:
            return _from_audio_v1(payload)
        if found == _TOKENS_V1:
            return _from_tokens_v1(payload)
    except (KeyError, TypeError, ValueError) as err:
        raise ManifestError(f"{path}: a {found!r} manifest with a missing or malformed field ({err!r})") from None
    raise ManifestError(
        f"{path}: not a shard manifest this code reads (format {found!r}); expected {{'format': {FORMAT!r}, "
        "'content': 'audio' | 'tokens', 'sample_rate', 'shards': [{'name', 'samples', 'seconds'}], ...}. Rewrite the "
        "shards with `audiolm-pl data shards` (audio) or `audiolm-pl tokenize` (tokens), or delete the manifest to "
        "read every *.tar of the directory"
    )


def _entries(shards: list, seconds_per_entry) -> list[ShardEntry]:
    return [ShardEntry(str(entry["name"]), int(entry["samples"]), seconds_per_entry(entry)) for entry in shards]


def _from_v2(payload: dict) -> ShardManifest:
    return ShardManifest(
        content=payload["content"], sample_rate=int(payload["sample_rate"]),
        shards=_entries(payload["shards"], lambda entry: entry.get("seconds")),
        speakers=list(payload.get("speakers", [])), made_by=dict(payload.get("made_by", {})),
        token_specs=payload.get("token_specs"), producers=payload.get("producers"),
        semantic_hash=payload.get("semantic_hash"), codec_hash=payload.get("codec_hash"),
    )


def _from_audio_v1(payload: dict) -> ShardManifest:
    return ShardManifest(
        content="audio", sample_rate=int(payload["sample_rate"]),
        shards=_entries(payload["shards"], lambda entry: float(entry["hours"]) * 3600),
        speakers=list(payload.get("speakers", [])), made_by=dict(payload.get("made_by", {})),
    )


def _from_tokens_v1(payload: dict) -> ShardManifest:
    specs = payload["token_specs"]
    return ShardManifest(
        content="tokens", sample_rate=int(specs["acoustic"]["sample_rate"]),
        shards=_entries(payload["shards"], lambda entry: None),
        token_specs=specs, producers=payload.get("producers"),
        semantic_hash=payload.get("semantic_hash"), codec_hash=payload.get("codec_hash"),
    )
