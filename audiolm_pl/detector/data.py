"""`DetectorDataModule`: balanced batches of real and synthetic audio crops from two sets of WebDataset shards.

Real shards are any audio shards (`audiolm-pl data shards`); synthetic ones are our codec's resynthesis of real
shards and/or shards of our generated audio (`audiolm-pl detector-shards`). Each set is read by its own
`ShardStream` (the same crops, resumable positions and DDP split as every audio stage), and each batch is half
of each, so the classes stay balanced whatever the sizes of the two sets. Batches are dicts:
    wav   float32 (B, T)  T = crop_seconds * sample_rate; the first B/2 rows real, the rest synthetic
    mask  bool    (B, T)  True on audio, False on padding past a clip's end
    label float32 (B,)    0 real, 1 synthetic
    key   list[str]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from audiolm_pl.data.datamodule import AudioCropper, AudioDataConfig, collate_audio
from audiolm_pl.data.shard_io import AudioDecodeError
from audiolm_pl.data.shard_paths import manifest_for, resolve_shards
from audiolm_pl.data.stream import BAD_SAMPLES_KEY, EpochLoader, ShardStream, StreamDataModule, check_stream_fields

REAL, SYNTHETIC = 0.0, 1.0


@dataclass
class DetectorDataConfig:
    real_train_shards: str = "shards/speech/train"  # shard directory, brace pattern or glob
    synthetic_train_shards: str = "shards/detector/train"  # e.g. "shards/detector/train/{codec,generated}"
    real_val_shards: str = "shards/speech/val"  # held-out speakers: what the reported accuracy means
    synthetic_val_shards: str = "shards/detector/val"
    sample_rate: int = 16000
    crop_seconds: float = 1.0
    batch_size: int = 16  # half real, half synthetic
    num_workers: int = 0  # per rank and per set; never more than either set's shards per rank
    shuffle_buffer: int = 200
    samples_per_epoch: int = 2000  # per rank
    val_samples: int = 64  # per rank and per set
    min_seconds: float = 0.1
    seed: int = 0
    max_bad_fraction: float = 0.1

    def __post_init__(self):
        check_stream_fields(self)
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"data.batch_size must be even (half real, half synthetic); got {self.batch_size}")

    def audio_config(self, synthetic: bool) -> AudioDataConfig:
        """The `AudioDataConfig` of one set: half the batch, the other fields shared."""
        kind = "synthetic" if synthetic else "real"
        return AudioDataConfig(
            train_shards=getattr(self, f"{kind}_train_shards"), val_shards=getattr(self, f"{kind}_val_shards"),
            sample_rate=self.sample_rate, crop_seconds=self.crop_seconds, batch_size=self.batch_size // 2,
            num_workers=self.num_workers, shuffle_buffer=self.shuffle_buffer, samples_per_epoch=self.samples_per_epoch // 2,
            val_samples=self.val_samples, min_seconds=self.min_seconds, seed=self.seed + int(synthetic),
            max_bad_fraction=self.max_bad_fraction)


class LabelledAudio(StreamDataModule):
    """One set's stream: audio crops (`AudioCropper`), each batch labelled with the set's class."""

    def __init__(self, config: AudioDataConfig, label: float):
        super().__init__(config)
        self.label = label

    def make_example(self, train: bool) -> AudioCropper:
        return AudioCropper(self.config, train)

    def collate(self, examples: list[dict]) -> dict:
        batch = collate_audio(examples)
        batch["label"] = torch.full((len(examples),), self.label)  # (B/2,)
        return batch

    def stream(self, train: bool) -> ShardStream:
        return self._stream(train)


class PairedStream(IterableDataset):
    """Two `ShardStream`s read in step: each batch is one batch of each, concatenated. Quacks like a training
    `ShardStream` for `EpochLoader` (position, batches_per_epoch, num_workers), so a resumed run goes on exactly."""

    def __init__(self, real: ShardStream, synthetic: ShardStream):
        super().__init__()
        self.streams = (real, synthetic)
        self.batches_per_epoch = real.batches_per_epoch
        self.num_workers = real.num_workers

    @property
    def position(self):
        return self.streams[0].position

    @position.setter
    def position(self, value) -> None:
        for stream in self.streams:
            stream.position = value

    def __len__(self) -> int:
        return min(len(stream) for stream in self.streams)

    def __iter__(self) -> Iterator[dict]:
        for real, synthetic in zip(*self.streams):
            yield {
                "wav": torch.cat([real["wav"], synthetic["wav"]]),  # (B, T)
                "mask": torch.cat([real["mask"], synthetic["mask"]]),  # (B, T)
                "label": torch.cat([real["label"], synthetic["label"]]),  # (B,)
                "key": real["key"] + synthetic["key"],
                **({BAD_SAMPLES_KEY: real[BAD_SAMPLES_KEY] + synthetic[BAD_SAMPLES_KEY]} if BAD_SAMPLES_KEY in real else {}),
            }


class DetectorDataModule(StreamDataModule):
    config: DetectorDataConfig

    def __init__(self, config: DetectorDataConfig):
        super().__init__(config)
        self.sets = (LabelledAudio(config.audio_config(False), REAL), LabelledAudio(config.audio_config(True), SYNTHETIC))

    def _paired(self, train: bool) -> PairedStream:
        return PairedStream(*(labelled.stream(train) for labelled in self.sets))

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.world_size if self.trainer else 1
        for labelled in self.sets:
            if stage in (None, "fit"):
                stream = labelled.stream(train=True)
                stream.check_readers(world, stream.num_workers)
            for field_name in ("train_shards", "val_shards"):
                self._check_rate(getattr(labelled.config, field_name))

    def _check_rate(self, spec: str) -> None:
        resolve_shards(spec)  # a missing set is named here, before any reader starts
        manifest = manifest_for(spec)
        if manifest is not None and manifest.sample_rate != self.config.sample_rate:
            raise AudioDecodeError(f"detector shards {spec!r} hold {manifest.sample_rate} Hz audio (manifest.json); "
                                   f"data.sample_rate is {self.config.sample_rate}")

    def train_dataloader(self) -> DataLoader:
        return EpochLoader(self._paired(train=True))

    def val_dataloader(self) -> DataLoader:
        paired = self._paired(train=False)
        for stream in paired.streams:  # read in this process: validation sets are small, and both must stay in step
            stream.num_workers = 0
        return DataLoader(paired, batch_size=None, num_workers=0)
