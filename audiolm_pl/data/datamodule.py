"""`AudioDataModule`: random crops of audio from WebDataset shards, for the codec and SSL stages.

Batches are dicts:
    wav  float32 (B, T)  T = crop_seconds * sample_rate, zero-padded past a clip's end
    mask bool    (B, T)  True on real audio, False on padding
    key  list[str]       sample keys (shard-unique), for debugging and logging
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile
import torch

from audiolm_pl.data.shard_paths import manifest_for
from audiolm_pl.data.stream import BadSample, StreamDataModule, check_stream_fields, sample_location


@dataclass
class AudioDataConfig:
    train_shards: str = "shards/speech/train"  # shard directory, brace pattern or glob
    val_shards: str = "shards/speech/val"
    sample_rate: int = 16000
    crop_seconds: float = 1.0
    batch_size: int = 8
    num_workers: int = 0  # per rank; never more than shards per rank
    shuffle_buffer: int = 200
    samples_per_epoch: int = 2000  # per rank; an epoch has samples_per_epoch // batch_size batches
    val_samples: int = 64  # per rank
    min_seconds: float = 0.1  # shorter clips are dropped
    seed: int = 0
    max_bad_fraction: float = 0.1  # unreadable samples are skipped; more than this share of those read stops the run

    def __post_init__(self):
        check_stream_fields(self)
        if self.sample_rate <= 0:
            raise ValueError(f"data.sample_rate must be a positive number of Hz; got {self.sample_rate}")


class AudioDecodeError(ValueError):
    """A sample in a shard is not the audio its manifest promises."""


def decode_audio(sample: dict, expected_rate: int) -> np.ndarray:
    """The `flac` (or `wav`) entry of a raw WebDataset sample -> float32 (T,) mono.

    A member that does not decode is a `BadSample` (the stream skips it); audio of the wrong rate or channel
    count is an `AudioDecodeError` (the shards do not fit the config: the run stops)."""
    where = sample_location(sample)
    payload = sample.get("flac") or sample.get("wav")
    if payload is None:
        raise BadSample(f"{where} has no 'flac' or 'wav' entry (keys: {sorted(sample)})")
    try:
        audio, rate = soundfile.read(io.BytesIO(payload), dtype="float32", always_2d=True)
    except RuntimeError as err:  # soundfile.LibsndfileError
        raise BadSample(f"{where}: cannot decode its audio ({getattr(err, 'error_string', err)})") from None
    if rate != expected_rate:
        raise AudioDecodeError(f"{where} is {rate} Hz; this config expects {expected_rate} Hz (data.sample_rate)")
    if audio.shape[1] != 1:
        raise AudioDecodeError(f"{where} has {audio.shape[1]} channels; shards must be mono")
    return audio[:, 0]


class AudioCropper:
    """raw sample -> {"wav": (T,), "mask": (T,), "key"}: a random crop (train) or the start (val)."""

    def __init__(self, config: AudioDataConfig, train: bool):
        self.config = config
        self.train = train
        self.crop_samples = int(round(config.crop_seconds * config.sample_rate))
        self.min_samples = int(config.min_seconds * config.sample_rate)

    def __call__(self, sample: dict, rng: random.Random) -> Optional[dict]:
        audio = decode_audio(sample, self.config.sample_rate)
        if len(audio) < self.min_samples:
            return None
        start = rng.randrange(len(audio) - self.crop_samples + 1) if self.train and len(audio) > self.crop_samples else 0
        crop = audio[start : start + self.crop_samples]
        wav = np.zeros(self.crop_samples, dtype=np.float32)
        wav[: len(crop)] = crop
        mask = np.zeros(self.crop_samples, dtype=bool)
        mask[: len(crop)] = True
        return {"wav": wav, "mask": mask, "key": sample["__key__"]}


def collate_audio(examples: list[dict]) -> dict:
    return {
        "wav": torch.from_numpy(np.stack([e["wav"] for e in examples])),  # (B, T)
        "mask": torch.from_numpy(np.stack([e["mask"] for e in examples])),  # (B, T)
        "key": [e["key"] for e in examples],
    }


class AudioDataModule(StreamDataModule):
    config: AudioDataConfig

    def make_example(self, train: bool) -> AudioCropper:
        return AudioCropper(self.config, train)

    def collate(self, examples: list[dict]) -> dict:
        return collate_audio(examples)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for field_name in ("train_shards", "val_shards"):
            manifest = manifest_for(getattr(self.config, field_name))
            rate = manifest and manifest.get("sample_rate")
            if rate and int(rate) != self.config.sample_rate:
                raise AudioDecodeError(
                    f"data.{field_name}={getattr(self.config, field_name)!r} holds {rate} Hz audio "
                    f"(manifest.json); data.sample_rate is {self.config.sample_rate}"
                )
