"""Reading audio shards utterance by utterance (k-means fitting, measuring), with phone alignments.

Audio shards are WebDataset tars of `flac` + `json` (see docs/CONTRACTS.md); this reads them
with tarfile + soundfile, in order, without the training data pipeline's crops and shuffling.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile

from audiolm_pl.data.shard_paths import resolve_shards


@dataclass
class Utterance:
    key: str
    wav: np.ndarray  # (T,) float32 mono at the shards' sample rate
    sample_rate: int
    speaker: str = ""
    text: str = ""
    phones: list = field(default_factory=list)  # [[start_s, end_s, phone], ...]


def shard_files(shards: str | Path) -> list[Path]:
    """Shard directories, globs or brace patterns (`data.shard_paths.resolve_shards`) -> tar paths."""
    return [Path(path) for path in resolve_shards(shards)]


def iter_utterances(shards: str | Path, sample_rate: int = 16000, limit: int | None = None) -> Iterator[Utterance]:
    """Every utterance of the shards in order; audio at another rate than `sample_rate` is an error."""
    count = 0
    for tar_path in shard_files(shards):
        entries: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                entries.setdefault(key, {})[suffix] = tar.extractfile(member).read()
        for key, parts in entries.items():
            audio_bytes = parts.get("flac") or parts.get("wav")
            if audio_bytes is None:
                continue
            wav, rate = soundfile.read(io.BytesIO(audio_bytes), dtype="float32", always_2d=True)
            if rate != sample_rate:
                raise ValueError(f"{tar_path}:{key} is {rate} Hz audio; expected {sample_rate} Hz")
            meta = json.loads(parts["json"]) if "json" in parts else {}
            yield Utterance(key, wav[:, 0], rate, str(meta.get("speaker", "")), str(meta.get("text", "")), meta.get("phones") or [])
            count += 1
            if limit is not None and count >= limit:
                return
