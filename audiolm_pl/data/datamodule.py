"""`AudioDataModule`: random crops of audio from WebDataset shards, for the codec and SSL stages.

Batches are dicts:
    wav  float32 (B, T)  T = crop_seconds * sample_rate, zero-padded past a clip's end
    mask bool    (B, T)  True on real audio, False on padding
    key  list[str]       sample keys (shard-unique), for debugging and logging
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from audiolm_pl.data.shard_io import AudioDecodeError, decode_audio_window
from audiolm_pl.data.shard_paths import manifest_for
from audiolm_pl.data.stream import StreamDataModule, check_stream_fields


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


class AudioCropper:
    """raw sample -> {"wav": (T,), "mask": (T,), "key"}: a random crop (train) or the start (val)."""

    def __init__(self, config: AudioDataConfig, train: bool):
        self.config = config
        self.train = train
        self.crop_samples = int(round(config.crop_seconds * config.sample_rate))
        self.min_samples = int(config.min_seconds * config.sample_rate)

    def __call__(self, sample: dict, rng: random.Random) -> Optional[dict]:
        def choose_start(length: int) -> int:
            return rng.randrange(length - self.crop_samples + 1) if self.train and length > self.crop_samples else 0

        crop, length = decode_audio_window(sample, self.config.sample_rate, self.crop_samples, choose_start)
        if length < self.min_samples:
            return None
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
            if manifest is not None and manifest.sample_rate != self.config.sample_rate:
                raise AudioDecodeError(
                    f"data.{field_name}={getattr(self.config, field_name)!r} holds {manifest.sample_rate} Hz audio "
                    f"(manifest.json); data.sample_rate is {self.config.sample_rate}"
                )
