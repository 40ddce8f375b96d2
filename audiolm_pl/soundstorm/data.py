"""SoundStorm's view of the token shards: aligned crops of semantic ids and all RVQ levels, frame by frame.

The crops come from the coarse / fine stages' `TokenDataModule` (same shards, same random aligned crops);
`SoundStormFrames` plays the part of their layout and `collate_frames` pads them into
    semantic int64 (B, T)     the semantic id each acoustic frame reads (PAD = K past the ids' end)
    codes    int64 (B, T, L)  the codes of levels 0..L-1 (0 on padding)
    frames   bool  (B, T)     True on real frames
Masking happens in the LightningModule, on the device, afresh every step (`masking.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from audiolm_pl.lm.token_data import TokenDataModule


@dataclass
class FrameCrop:
    semantic: np.ndarray  # (T,) int64: the semantic id of each acoustic frame
    codes: np.ndarray  # (T, L) int64


@dataclass
class SoundStormFrames:
    """How SoundStorm reads a crop: what its checkpoint stores as `layout`."""

    semantic_vocab: int  # K: ids 0..K-1, PAD = K
    codebook_size: int  # C: codes 0..C-1, MASK = C
    num_levels: int  # L: the first L RVQ levels of the codec
    frames_per_id: int = 2  # r: acoustic frames per semantic id (50 Hz / 25 Hz)

    stage = "soundstorm"

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> FrameCrop:
        """semantic ids (T_s,), acoustic codes (T_a, Q) of one crop -> `FrameCrop` of min(T_a, T_s * r) frames."""
        frames = min(len(acoustic), len(semantic) * self.frames_per_id)
        ids = np.asarray(semantic, np.int64)[np.arange(frames) // self.frames_per_id]  # (T,)
        return FrameCrop(ids, np.asarray(acoustic[:frames, : self.num_levels], np.int64))

    def to_dict(self) -> dict:
        return {"stage": self.stage, **asdict(self)}


def collate_frames(crops: list[FrameCrop], pad_id: int) -> dict:
    """Right-pad crops into {"semantic" (B, T), "codes" (B, T, L), "frames" (B, T)}."""
    width = max(len(crop.semantic) for crop in crops)
    levels = crops[0].codes.shape[1]
    semantic = np.full((len(crops), width), pad_id, np.int64)  # (B, T)
    codes = np.zeros((len(crops), width, levels), np.int64)  # (B, T, L)
    frames = np.zeros((len(crops), width), bool)  # (B, T)
    for row, crop in enumerate(crops):
        semantic[row, : len(crop.semantic)] = crop.semantic
        codes[row, : len(crop.codes)] = crop.codes
        frames[row, : len(crop.semantic)] = True
    return {"semantic": torch.from_numpy(semantic), "codes": torch.from_numpy(codes), "frames": torch.from_numpy(frames)}


class SoundStormDataModule(TokenDataModule):
    """`TokenDataModule` (shards, crops, spec checks) with SoundStorm's frame batches."""

    def collate(self, examples: list) -> dict:
        return collate_frames(examples, self.layout.semantic_vocab)
