"""How each stage turns semantic ids / acoustic codes into one flat token sequence, and back.

    semantic: [BOS] s_1 .. s_n                                   vocab K + 1
    coarse:   s_1 .. s_n [SEP] c_1,0 .. c_1,Q'-1  c_2,0 ..       vocab K + 1 + Q' * C
    fine:     c_1,0 .. c_T,Q'-1 [SEP] f_1,Q' .. f_1,Q-1 f_2,Q' .. vocab Q * C + 1

Semantic ids keep their own values (0..K-1); acoustic code c of RVQ level q becomes
`acoustic_base + q * C + c`, so every level has its own slice of the vocabulary. Acoustic
codes are flattened frame by frame (all levels of frame 1, then frame 2, ...). Consecutive
duplicate semantic ids can be removed (the paper does so in stages 1 and 2).

`example(semantic, acoustic)` gives the training sequence plus, for every target position,
the RVQ level it predicts (-1: no loss there; the semantic stage uses level 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

IGNORE = -1  # level of a target position that carries no loss


def dedup_consecutive(ids: np.ndarray) -> np.ndarray:
    """(T,) -> (T',) with runs of equal ids collapsed to one id."""
    if len(ids) == 0:
        return ids
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return ids[keep]


@dataclass
class Example:
    tokens: np.ndarray  # (T,) int64: the whole sequence; the model reads tokens[:-1]
    levels: np.ndarray  # (T - 1,) int64: RVQ level of target tokens[i + 1], or IGNORE
    conditions: Optional[np.ndarray] = None  # (T - 1, w) int64: condition ids added to input i (aligned layout)


@dataclass
class SemanticLayout:
    semantic_vocab: int  # K
    dedup: bool = True

    stage = "semantic"

    @property
    def bos(self) -> int:
        return self.semantic_vocab

    @property
    def vocab_size(self) -> int:
        return self.semantic_vocab + 1

    @property
    def levels(self) -> list[int]:
        return [0]

    def prefix(self, semantic_ids: np.ndarray) -> np.ndarray:
        """prompt ids (T,) -> [BOS] + ids (deduplicated if configured) (1 + T',)."""
        ids = dedup_consecutive(semantic_ids) if self.dedup else semantic_ids
        return np.concatenate([[self.bos], ids]).astype(np.int64)  # (1 + T',)

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(semantic)  # (1 + T',)
        return Example(tokens, np.zeros(len(tokens) - 1, dtype=np.int64))

    def allowed(self, step: int, previous: torch.Tensor) -> torch.Tensor:
        """(B,) last ids -> (B, V) mask: semantic ids only, and no repeat when trained deduplicated."""
        mask = torch.zeros(previous.shape[0], self.vocab_size, dtype=torch.bool)
        mask[:, : self.semantic_vocab] = True
        if self.dedup:
            mask[torch.arange(previous.shape[0]), previous.cpu()] = False
        return mask

    def to_dict(self) -> dict:
        return {"stage": self.stage, **asdict(self)}


@dataclass
class CoarseLayout:
    semantic_vocab: int  # K
    codebook_size: int  # C
    num_coarse: int  # Q'
    dedup_semantic: bool = True

    stage = "coarse"

    @property
    def sep(self) -> int:
        return self.semantic_vocab

    @property
    def acoustic_base(self) -> int:
        return self.semantic_vocab + 1

    @property
    def vocab_size(self) -> int:
        return self.acoustic_base + self.num_coarse * self.codebook_size

    @property
    def levels(self) -> list[int]:
        return list(range(self.num_coarse))

    def prefix(self, semantic_ids: np.ndarray, prompt_coarse: np.ndarray | None = None) -> np.ndarray:
        """semantic (T_s,), optional coarse prompt (T_p, Q') -> [semantic] [SEP] [prompt flat] (n + 1 + T_p * Q',)."""
        ids = dedup_consecutive(semantic_ids) if self.dedup_semantic else semantic_ids
        prompt = np.zeros((0, self.num_coarse), np.int64) if prompt_coarse is None else prompt_coarse
        return np.concatenate([ids, [self.sep], self.flatten(prompt)]).astype(np.int64)

    def flatten(self, coarse: np.ndarray) -> np.ndarray:
        """coarse codes (T, Q') -> vocab ids frame by frame (T * Q',)."""
        offsets = self.acoustic_base + self.codebook_size * np.arange(self.num_coarse)  # (Q',)
        return (coarse[:, : self.num_coarse] + offsets).reshape(-1)  # (T * Q',)

    def unflatten(self, tokens: torch.Tensor) -> torch.Tensor:
        """vocab ids (B, T * Q') starting at level 0 -> codes (B, T, Q')."""
        batch = tokens.shape[0]
        codes = tokens.reshape(batch, -1, self.num_coarse) - self.acoustic_base  # (B, T, Q')
        return codes - self.codebook_size * torch.arange(self.num_coarse, device=tokens.device)

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(semantic, acoustic[:, : self.num_coarse])  # (n + 1 + T * Q',)
        start = len(tokens) - len(acoustic) * self.num_coarse - 1  # target index of the first coarse code
        levels = np.full(len(tokens) - 1, IGNORE, dtype=np.int64)
        levels[start:] = np.arange(len(levels) - start) % self.num_coarse
        return Example(tokens, levels)

    def allowed_level(self, level: int) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
        low = self.acoustic_base + level * self.codebook_size
        mask[low : low + self.codebook_size] = True
        return mask

    def to_dict(self) -> dict:
        return {"stage": self.stage, **asdict(self)}


@dataclass
class FineLayout:
    codebook_size: int  # C
    num_coarse: int  # Q'
    num_quantizers: int  # Q

    stage = "fine"

    @property
    def num_fine(self) -> int:
        return self.num_quantizers - self.num_coarse

    @property
    def sep(self) -> int:
        return self.num_quantizers * self.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.num_quantizers * self.codebook_size + 1

    @property
    def levels(self) -> list[int]:
        return list(range(self.num_coarse, self.num_quantizers))

    def flatten(self, codes: np.ndarray, first_level: int) -> np.ndarray:
        """codes (T, q) of levels first_level.. -> vocab ids frame by frame (T * q,)."""
        offsets = self.codebook_size * np.arange(first_level, first_level + codes.shape[1])  # (q,)
        return (codes + offsets).reshape(-1)  # (T * q,)

    def prefix(self, coarse: np.ndarray, prompt_fine: np.ndarray | None = None) -> np.ndarray:
        """coarse (T, Q'), optional fine prompt (T_p, Q - Q') -> [coarse flat] [SEP] [prompt flat]."""
        prompt = np.zeros((0, self.num_fine), np.int64) if prompt_fine is None else prompt_fine
        parts = [self.flatten(coarse[:, : self.num_coarse], 0), [self.sep], self.flatten(prompt, self.num_coarse)]
        return np.concatenate(parts).astype(np.int64)  # (T * Q' + 1 + T_p * (Q - Q'),)

    def unflatten(self, tokens: torch.Tensor) -> torch.Tensor:
        """vocab ids (B, T * (Q - Q')) starting at level Q' -> fine codes (B, T, Q - Q')."""
        batch = tokens.shape[0]
        codes = tokens.reshape(batch, -1, self.num_fine)  # (B, T, Q - Q')
        levels = torch.arange(self.num_coarse, self.num_quantizers, device=tokens.device)
        return codes - self.codebook_size * levels

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(acoustic[:, : self.num_coarse], acoustic[:, self.num_coarse : self.num_quantizers])
        start = len(acoustic) * self.num_coarse  # target index of the first fine code (after SEP)
        levels = np.full(len(tokens) - 1, IGNORE, dtype=np.int64)
        levels[start:] = self.num_coarse + np.arange(len(levels) - start) % self.num_fine
        return Example(tokens, levels)

    def allowed_level(self, level: int) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
        mask[level * self.codebook_size : (level + 1) * self.codebook_size] = True
        return mask

    def to_dict(self) -> dict:
        return {"stage": self.stage, **asdict(self)}


LAYOUTS = {"semantic": SemanticLayout, "coarse": CoarseLayout, "fine": FineLayout}


def layout_from_dict(values: dict):
    """Inverse of `layout.to_dict()` (as stored in an LM checkpoint)."""
    from audiolm_pl.lm.aligned import AlignedCoarseLayout
    from audiolm_pl.lm.interleaved import InterleavedCoarseLayout, InterleavedFineLayout

    values = dict(values)
    stage, order = values.pop("stage", None), values.pop("order", "prefix")
    classes = {("coarse", "interleaved"): InterleavedCoarseLayout, ("fine", "interleaved"): InterleavedFineLayout,
               ("coarse", "aligned"): AlignedCoarseLayout,
               **{(name, "prefix"): cls for name, cls in LAYOUTS.items()}}
    if (stage, order) not in classes:
        raise ValueError(f"layout dict has stage {stage!r} and order {order!r}; expected one of {sorted(classes)}")
    return classes[stage, order](**values)
