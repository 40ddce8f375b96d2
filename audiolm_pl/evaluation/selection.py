"""Which held-out utterances are evaluated: N per speaker, chosen deterministically."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from audiolm_pl.semantic.corpus import Utterance, iter_utterances

_SEGMENT_KEY = re.compile(r"-seg\d{3}$")  # shards.py cuts long recordings into `<key>-segNNN`


def is_whole_recording(utterance: Utterance) -> bool:
    """False for a segment of a longer recording: its json text is the whole recording's."""
    return not _SEGMENT_KEY.search(utterance.key)


def speaker_group(speaker: str) -> str:
    """The speaker's name up to its first '-' (the TTS engine in the embedded corpus: espeak, flite, festival)."""
    return speaker.split("-")[0] or "(unknown)"


def _rank(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def select_utterances(utterances: Iterable[Utterance], per_speaker: int, min_seconds: float, seed: int = 0) -> list[Utterance]:
    """`per_speaker` utterances of every speaker, those of at least `min_seconds` first.

    Within a speaker utterances are ranked by a hash of (seed, key): the choice depends on the
    seed and the keys only, not on shard order. Keeps at most 2 x `per_speaker` per speaker in
    memory. Returns them sorted by (speaker, key).
    """
    kept: dict[tuple[str, bool], list[tuple[str, Utterance]]] = {}
    for utterance in utterances:
        long_enough = len(utterance.wav) >= min_seconds * utterance.sample_rate
        bucket = kept.setdefault((utterance.speaker, long_enough), [])
        bucket.append((_rank(seed, utterance.key), utterance))
        bucket.sort(key=lambda ranked: ranked[0])
        del bucket[per_speaker:]
    chosen = []
    for speaker in sorted({speaker for speaker, _ in kept}):
        ranked = kept.get((speaker, True), []) + kept.get((speaker, False), [])
        chosen += [utterance for _, utterance in ranked[:per_speaker]]
    return sorted(chosen, key=lambda utterance: (utterance.speaker, utterance.key))


def load_eval_utterances(shards: str | Path, sample_rate: int, per_speaker: int, min_seconds: float,
                         seed: int = 0) -> list[Utterance]:
    """Audio shards (a directory, a glob or one tar) -> the utterances `evaluate_pipeline` takes."""
    return select_utterances(iter_utterances(shards, sample_rate), per_speaker, min_seconds, seed)
