"""Reading audio shards utterance by utterance (k-means fitting, measuring), with phone alignments.

The shards are read in order through `data.shard_io.iter_samples`, without the training stream's crops and shuffling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from audiolm_pl.data.shard_io import iter_samples
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
    for sample in iter_samples(shards, sample_rate):
        if sample.audio is None:  # a token shard's sample, or one without audio
            continue
        meta = sample.meta
        yield Utterance(sample.key, sample.audio, sample.sample_rate, str(meta.get("speaker", "")),
                        str(meta.get("text", "")), meta.get("phones") or [])
        count += 1
        if limit is not None and count >= limit:
            return
