"""One writer and one reader for the samples of WebDataset shards, audio and tokens.

A sample is the tar members that share a key:
    audio   <key>.flac  mono, 16-bit PCM, at the directory's rate    + <key>.json (+ <key>.txt, read when present)
    tokens  <key>.semantic.npy (T_s,) int   <key>.acoustic.npy (T_a, Q) int   + <key>.json
The directory's `manifest.json` is `data.manifest`. Writers go through `ShardWriter` (the tar appears under its
name only when whole), readers through `iter_samples` (ordered, for jobs and measuring) or, in the training stream,
through `decode_audio` (`decode_audio_window` for a crop) / `decode_npy` on the raw samples that webdataset's own stages group.
"""

from __future__ import annotations

import io
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import soundfile
import webdataset as wds

from audiolm_pl.data.shard_paths import resolve_shards
from audiolm_pl.fileio import atomic_output

AUDIO_MEMBER, SEMANTIC_MEMBER, ACOUSTIC_MEMBER = "flac", "semantic.npy", "acoustic.npy"


class BadSample(ValueError):
    """A sample in a shard cannot be read; the message names shard and key. The training stream skips it."""


class AudioDecodeError(ValueError):
    """A sample in a shard is not the audio its manifest promises (another rate, several channels)."""


def sample_location(raw: dict) -> str:
    """`shard.tar:key` of a raw WebDataset sample, for messages."""
    return f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"


# -- writing -------------------------------------------------------------------------------------------

def encode_sample(key: str, meta: dict, *, audio: Optional[np.ndarray] = None, sample_rate: Optional[int] = None,
                  semantic: Optional[np.ndarray] = None, acoustic: Optional[np.ndarray] = None) -> dict:
    """One sample's members as bytes (a raw WebDataset sample), ready for `ShardWriter.write`. Pure and picklable,
    so the costly FLAC encoding can run in worker processes.
    audio: (T,) float32 mono, written as 16-bit FLAC at `sample_rate`; semantic (T_s,), acoustic (T_a, Q): ints."""
    if "." in key:
        raise ValueError(f"sample key {key!r} holds a '.': webdataset would split it into key and member name")
    raw = {"__key__": key}
    if audio is not None:
        if sample_rate is None or audio.ndim != 1:
            raise ValueError(f"{key}: audio must be (T,) mono with a sample_rate; got shape {audio.shape}, {sample_rate}")
        buffer = io.BytesIO()
        soundfile.write(buffer, audio, sample_rate, format="FLAC", subtype="PCM_16")
        raw[AUDIO_MEMBER] = buffer.getvalue()
    for name, array in ((SEMANTIC_MEMBER, semantic), (ACOUSTIC_MEMBER, acoustic)):
        if array is not None:
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            raw[name] = buffer.getvalue()
    raw["json"] = json.dumps(meta).encode()
    return raw


@dataclass
class ShardJobReport:
    """What a resumable job that writes one shard directory (tokenize, detector-shards) did."""

    out_dir: Path
    shards_written: int
    shards_skipped: int  # already there from an earlier run
    samples: int  # in the whole output directory


class ShardWriter:
    """`with ShardWriter(path) as shard: shard.write_sample(key, meta, audio=..., sample_rate=...)`.

    The tar is written under a temporary name beside `path` and renamed when the block ends without an error, so
    an interrupted writer leaves no half shard. Tar mtimes are fixed: the same samples give the same bytes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.samples = 0
        self._atomic = atomic_output(self.path)
        self._tar: Optional[wds.TarWriter] = None

    def __enter__(self) -> "ShardWriter":
        temporary = self._atomic.__enter__()
        self._tar = wds.TarWriter(str(temporary), mtime=0)
        return self

    def __exit__(self, *error) -> bool:
        self._tar.close()  # closed before the rename, or before the temporary file is removed on an error
        return self._atomic.__exit__(*error)

    def write(self, raw: dict) -> None:
        """A sample from `encode_sample`."""
        self._tar.write(raw)
        self.samples += 1

    def write_sample(self, key: str, meta: dict, **members) -> None:
        """`encode_sample(key, meta, **members)`, written."""
        self.write(encode_sample(key, meta, **members))


# -- reading -------------------------------------------------------------------------------------------

@dataclass
class ShardSample:
    key: str
    shard: str  # the tar it came from
    meta: dict  # its json member ({} when there is none)
    audio: Optional[np.ndarray] = None  # (T,) float32 mono
    sample_rate: Optional[int] = None
    semantic: Optional[np.ndarray] = None  # (T_s,) int
    acoustic: Optional[np.ndarray] = None  # (T_a, Q) int
    text: Optional[str] = None  # the txt member, when there is one


def decode_audio(raw: dict, expected_rate: int) -> np.ndarray:
    """The `flac` (or `wav`) member of a raw sample -> float32 (T,) mono.

    A member that does not decode is a `BadSample`; audio of another rate or channel count is an `AudioDecodeError`
    (the shards do not fit the config)."""
    return _audio_and_rate(raw, expected_rate)[0]


def decode_audio_window(raw: dict, expected_rate: int, samples: int,
                        choose_start: Callable[[int], int]) -> tuple[np.ndarray, int]:
    """Up to `samples` of the audio member from `choose_start(length)` on -> (float32 (<= samples,), length).

    Reads only that window (FLAC seeks to it): a training crop of 1 s from a 6-s clip costs a third of decoding the
    clip. Same values as `decode_audio(raw, rate)[start:start + samples]`, same errors."""
    with _open_audio(raw, expected_rate) as (file, where):
        try:
            length = file.frames
            file.seek(choose_start(length))
            return file.read(samples, dtype="float32", always_2d=True)[:, 0], length  # (<= samples,)
        except RuntimeError as err:  # soundfile.LibsndfileError
            raise _undecodable(where, err) from None


def _audio_and_rate(raw: dict, expected_rate: Optional[int]) -> tuple[np.ndarray, int]:
    """(float32 (T,) mono, its rate); `expected_rate` None takes the rate the file says."""
    with _open_audio(raw, expected_rate) as (file, where):
        try:
            return file.read(dtype="float32", always_2d=True)[:, 0], file.samplerate  # (T,)
        except RuntimeError as err:  # soundfile.LibsndfileError
            raise _undecodable(where, err) from None


@contextmanager
def _open_audio(raw: dict, expected_rate: Optional[int]) -> Iterator[tuple[soundfile.SoundFile, str]]:
    """The audio member opened, its rate and channels checked; yields (file, where the sample is)."""
    where = sample_location(raw)
    payload = raw.get(AUDIO_MEMBER) or raw.get("wav")
    if payload is None:
        raise BadSample(f"{where} has no 'flac' or 'wav' entry (keys: {sorted(raw)})")
    try:
        file = soundfile.SoundFile(io.BytesIO(payload))
    except RuntimeError as err:  # soundfile.LibsndfileError
        raise _undecodable(where, err) from None
    with file:
        if expected_rate is not None and file.samplerate != expected_rate:
            raise AudioDecodeError(f"{where} is {file.samplerate} Hz; this config expects {expected_rate} Hz "
                                   "(data.sample_rate)")
        if file.channels != 1:
            raise AudioDecodeError(f"{where} has {file.channels} channels; shards must be mono")
        yield file, where


def _undecodable(where: str, err: RuntimeError) -> BadSample:
    return BadSample(f"{where}: cannot decode its audio ({getattr(err, 'error_string', err)})")  # LibsndfileError


def decode_npy(raw: dict, name: str) -> np.ndarray:
    """The `name` (e.g. "semantic.npy") array of a raw token sample, or `BadSample` naming shard and key."""
    if name not in raw:
        raise BadSample(f"{sample_location(raw)} has no {name!r} entry (keys: {sorted(raw)})")
    try:
        return np.load(io.BytesIO(raw[name]), allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # what np.load raises on a truncated or garbled .npy
        raise BadSample(f"{sample_location(raw)}: cannot read {name} ({err})") from None


def decode_sample(raw: dict, sample_rate: Optional[int]) -> ShardSample:
    """Every member a raw sample holds, decoded. Audio at another rate than `sample_rate` is an `AudioDecodeError`
    (None: take the rate the FLAC says)."""
    sample = ShardSample(key=raw["__key__"], shard=raw.get("__url__", ""),
                         meta=json.loads(raw["json"]) if "json" in raw else {})
    if AUDIO_MEMBER in raw or "wav" in raw:
        sample.audio, sample.sample_rate = _audio_and_rate(raw, sample_rate)
    if SEMANTIC_MEMBER in raw:
        sample.semantic = decode_npy(raw, SEMANTIC_MEMBER)
    if ACOUSTIC_MEMBER in raw:
        sample.acoustic = decode_npy(raw, ACOUSTIC_MEMBER)
    if "txt" in raw:
        sample.text = raw["txt"].decode("utf-8", errors="replace")
    return sample


def raw_samples(urls: list[str], handler=wds.reraise_exception) -> Iterator[dict]:
    """Raw samples ({"__key__", "__url__", member name -> bytes}) of the tars `urls`, in order. A tar that cannot be
    read raises unless `handler` says otherwise (`wds.warn_and_continue`: the streams go on). The training stream
    runs the same function as a webdataset stage (`wds.tarfile_to_samples`)."""
    return wds.tarfile_samples([{"url": url} for url in urls], handler=handler)


def iter_samples(spec: str | Path, sample_rate: Optional[int] = None, limit: Optional[int] = None) -> Iterator[ShardSample]:
    """Every sample of the shards of `spec` (a directory, glob or brace pattern: `resolve_shards`), in order,
    decoded. A member that cannot be read is a `BadSample`: jobs that read in order want every sample."""
    for count, raw in enumerate(raw_samples(resolve_shards(spec))):
        if limit is not None and count >= limit:
            return
        yield decode_sample(raw, sample_rate)
