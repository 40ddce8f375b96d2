"""`TokenDataModule`: random crops of token shards, aligned across semantic and acoustic frame rates.

A crop of `crop_seconds` starts at a random semantic frame s0 (training; the clip start in
validation) and takes acoustic frames from s0 * (acoustic rate / semantic rate), so both
token streams cover the same stretch of audio. The stage's layout turns the crop into one
flat sequence (see `layouts.py`). Batches are dicts:
    inputs  int64 (B, T)  tokens[:, :-1] of the right-padded sequences
    targets int64 (B, T)  tokens[:, 1:]
    levels  int64 (B, T)  RVQ level of each target, -1 where there is no loss (prefix, padding)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from audiolm_pl.data.manifest import read_manifest
from audiolm_pl.data.shard_io import ACOUSTIC_MEMBER, SEMANTIC_MEMBER, decode_npy
from audiolm_pl.data.shard_paths import manifest_for, shard_directories
from audiolm_pl.data.stream import StreamDataModule, check_stream_fields
from audiolm_pl.lm.layouts import IGNORE, SemanticLayout
from audiolm_pl.tokens import TokenSpec, require_same_spec


@dataclass
class TokenDataConfig:
    train_shards: str = "tokens/speech/train"  # token shard directory, brace pattern or glob
    val_shards: str = "tokens/speech/val"
    crop_seconds: float = 2.0
    batch_size: int = 8
    num_workers: int = 0  # per rank; never more than shards per rank
    shuffle_buffer: int = 200
    samples_per_epoch: int = 2000  # per rank
    val_samples: int = 64  # per rank
    min_seconds: float = 0.1  # shorter clips are dropped
    seed: int = 0
    # semantic stage: join consecutive clips into whole crops, so the model sees speech resume after the
    # silence that ends an utterance (unpacked, every crop of short clips ends in silence, and a model trained on
    # them continues a prompt with seconds of it)
    pack: bool = False
    max_bad_fraction: float = 0.1  # unreadable samples are skipped; more than this share of those read stops the run

    def __post_init__(self):
        check_stream_fields(self)


def read_token_specs(shards: str) -> dict[str, TokenSpec]:
    """The {"semantic", "acoustic"} TokenSpecs recorded in the manifest of token shards."""
    manifest = manifest_for(shards)
    if manifest is None or manifest.token_specs is None:
        raise FileNotFoundError(
            f"token shards {shards!r} have no manifest.json with 'token_specs' (make them with `audiolm-pl tokenize`)"
        )
    return {role: TokenSpec.from_dict(spec) for role, spec in manifest.token_specs.items()}


def read_producers(shards: str) -> dict[str, str]:
    """{"semantic", "acoustic"} -> the `identity()` of the tokenizer and codec that made the token shards
    (every directory of a brace pattern must agree); {} when a manifest predates recording them."""
    manifests = {directory: read_manifest(directory) for directory in shard_directories(shards)}
    found = {directory: manifest and manifest.producers for directory, manifest in manifests.items()}
    known = {directory: producers for directory, producers in found.items() if producers}
    if not known or len(known) < len(found):
        return {}
    (first, producers), *others = known.items()
    for directory, other in others:
        if other != producers:
            raise ValueError(f"{shards!r} mixes token shards of other producers: {first} was made by {producers}, "
                             f"{directory} by {other}; tokenize both with the same codec and semantic tokenizer")
    return producers


class TokenCropper:
    """raw token sample -> layout `Example` of an aligned crop (or None if the clip is too short)."""

    def __init__(self, config: TokenDataConfig, specs: dict[str, TokenSpec], layout, train: bool):
        self.layout = layout
        self.train = train
        self.semantic_spec, self.acoustic_spec = specs["semantic"], specs["acoustic"]
        self.crop_frames = max(1, self.semantic_spec.frames_in(config.crop_seconds))  # semantic frames
        self.min_frames = max(1, self.semantic_spec.frames_in(config.min_seconds))
        self.pack = config.pack
        if self.pack and not isinstance(layout, SemanticLayout):
            raise ValueError(f"data.pack=true joins clips of semantic ids only; the {layout.stage} stage crops each clip")
        self._carry, self._rng = np.zeros(0, np.int64), None  # ids left over for the next crop, per iteration

    def __call__(self, sample: dict, rng: random.Random):
        if self.pack:
            return self._packed(decode_npy(sample, SEMANTIC_MEMBER).astype(np.int64), rng)
        semantic = decode_npy(sample, SEMANTIC_MEMBER).astype(np.int64)  # (T_s,)
        acoustic = decode_npy(sample, ACOUSTIC_MEMBER).astype(np.int64)  # (T_a, Q)
        covered = self.semantic_spec.frames_for(len(acoustic), self.acoustic_spec, whole=True)
        usable = min(len(semantic), covered)  # semantic frames with acoustic cover
        if usable < self.min_frames:
            return None
        start = rng.randrange(usable - self.crop_frames + 1) if self.train and usable > self.crop_frames else 0
        length = min(self.crop_frames, usable)
        a_start, a_length = (self.acoustic_spec.frames_for(frames, self.semantic_spec) for frames in (start, length))
        return self.layout.example(semantic[start : start + length], acoustic[a_start : a_start + a_length])

    def _packed(self, semantic: np.ndarray, rng: random.Random):
        """Clips in stream order -> whole crops of `crop_frames` ids; the remainder carries over. Each pass over
        the stream has its own `rng`, so the carry starts empty there: a resumed stream replays the same crops."""
        if rng is not self._rng:
            self._carry, self._rng = np.zeros(0, np.int64), rng
        ids = np.concatenate([self._carry, semantic])  # (T_carry + T_s,)
        if len(ids) < self.crop_frames:
            self._carry = ids
            return None
        self._carry = ids[self.crop_frames :]
        return self.layout.example(ids[: self.crop_frames], np.zeros((0, 1), np.int64))


def collate_examples(examples: list) -> dict:
    """Right-pad layout examples into {"inputs", "targets", "levels"} (B, T_max - 1) and, for layouts
    with conditions, "conditions" (B, T_max - 1, w)."""
    width = max(len(e.tokens) for e in examples)
    tokens = np.zeros((len(examples), width), dtype=np.int64)  # (B, T_max); pad id 0 carries no loss
    levels = np.full((len(examples), width - 1), IGNORE, dtype=np.int64)  # (B, T_max - 1)
    for row, example in enumerate(examples):
        tokens[row, : len(example.tokens)] = example.tokens
        levels[row, : len(example.levels)] = example.levels
    tokens = torch.from_numpy(tokens)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "levels": torch.from_numpy(levels)}
    if examples[0].conditions is not None:  # (B, T_max - 1, w); id 0 where padded (no loss there)
        conditions = np.zeros((len(examples), width - 1, examples[0].conditions.shape[1]), dtype=np.int64)
        for row, example in enumerate(examples):
            conditions[row, : len(example.conditions)] = example.conditions
        batch["conditions"] = torch.from_numpy(conditions)
    return batch


class TokenDataModule(StreamDataModule):
    config: TokenDataConfig

    def __init__(self, config: TokenDataConfig, layout, token_specs: Optional[dict[str, TokenSpec]] = None):
        super().__init__(config)
        self.layout = layout
        self.token_specs = token_specs or read_token_specs(config.train_shards)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        val_specs = read_token_specs(self.config.val_shards)
        for role, spec in self.token_specs.items():
            require_same_spec(spec, val_specs[role], consumer=f"data.train_shards={self.config.train_shards!r}",
                              producer=f"data.val_shards={self.config.val_shards!r}")
        train_producers, val_producers = read_producers(self.config.train_shards), read_producers(self.config.val_shards)
        if train_producers and val_producers and train_producers != val_producers:
            raise ValueError(f"data.val_shards={self.config.val_shards!r} were made by {val_producers}, "
                             f"data.train_shards={self.config.train_shards!r} by {train_producers}; "
                             "tokenize both with the same codec and semantic tokenizer")

    def make_example(self, train: bool) -> "TokenCropper":
        return TokenCropper(self.config, self.token_specs, self.layout, train)

    def collate(self, examples: list) -> dict:
        return collate_examples(examples)
