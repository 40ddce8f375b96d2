"""How each stage turns semantic ids / acoustic codes into one flat token sequence, and back.

    semantic: [BOS] s_1 .. s_n                                   vocab K + 1
    coarse:   s_1 .. s_n [SEP] c_1,0 .. c_1,Q'-1  c_2,0 ..       vocab K + 1 + Q' * C
    (acoustic-only ablation: [BOS] c_1,0 .. , no semantic ids: `AcousticOnlyCoarseLayout`)
    fine:     c_1,0 .. c_T,Q'-1 [SEP] f_1,Q' .. f_1,Q-1 f_2,Q' .. vocab Q * C + 1

Semantic ids keep their own values (0..K-1); acoustic code c of RVQ level q becomes
`acoustic_base + q * C + c`, so every level has its own slice of the vocabulary. Acoustic
codes are flattened frame by frame (all levels of frame 1, then frame 2, ...). Consecutive
duplicate semantic ids can be removed (the paper does so in stages 1 and 2).

Every layout (these three, `aligned.py`, `interleaved.py`) implements `Layout`: `example(semantic,
acoustic)` gives the training sequence plus, for every target position, the RVQ level it predicts (-1: no
loss there; the semantic stage uses level 0); `sequence_length` what a crop costs in tokens; `to_dict` what
an LM checkpoint stores. The acoustic layouts share `AcousticLayout` (code <-> id offsets, level masks) and
one vocabulary per stage (`CoarseVocabulary`, `FineVocabulary`); the layout only decides the order.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import ClassVar, Optional

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


class Layout(abc.ABC):
    """How one stage turns a crop of tokens into one flat sequence: what data, training, checkpoints and
    generation may rely on whatever the layout. Subclasses are dataclasses; their fields are what is stored."""

    stage: ClassVar[str]  # "semantic" | "coarse" | "fine"
    order: ClassVar[str] = "prefix"  # "prefix" (the paper's) | "interleaved" | "aligned"
    condition_vocab = 0  # ids of the condition embeddings summed into each position (0: the model has none)

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def levels(self) -> list[int]:
        """The RVQ levels this stage predicts (the semantic stage: [0])."""

    @abc.abstractmethod
    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        """semantic ids (T_s,), acoustic codes (T_a, Q) of one crop -> the training `Example`."""

    @abc.abstractmethod
    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        """Tokens in the training sequence of a crop of this many frames (the model reads one fewer)."""

    def to_dict(self) -> dict:
        """What an LM checkpoint stores; `layout_from_dict` reads it back."""
        order = {} if self.order == "prefix" else {"order": self.order}
        return {"stage": self.stage, **order, **asdict(self)}


class AcousticLayout(Layout):
    """Layouts of acoustic codes: code c of RVQ level q is vocabulary id `acoustic_base + q * C + c`, so every
    level has its own slice of C ids; codes are flattened frame by frame (all levels of frame 1, then 2, ...)."""

    codebook_size: int  # C

    @property
    def acoustic_base(self) -> int:
        """Vocabulary id of code 0 of level 0."""
        return 0

    def level_offsets(self, first_level: int, count: int) -> np.ndarray:
        """(count,) vocabulary id of code 0 of levels first_level .. first_level + count - 1."""
        return self.acoustic_base + self.codebook_size * np.arange(first_level, first_level + count)

    def code_ids(self, codes: np.ndarray, first_level: int = 0) -> np.ndarray:
        """codes (T, q) of levels first_level.. -> vocabulary ids (T, q) int64."""
        return (codes + self.level_offsets(first_level, codes.shape[1])).astype(np.int64)

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Generated ids of this stage's levels, frame by frame, (B, T * L) or (B, m, k * L) -> codes (B, T, L),
        L = len(levels)."""
        width = len(self.levels)
        offsets = torch.from_numpy(self.level_offsets(self.levels[0], width)).to(ids.device)  # (L,)
        return ids.reshape(ids.shape[0], -1, width) - offsets  # (B, T, L)

    def level_mask(self, level: int) -> torch.Tensor:
        """(V,) bool: the ids of RVQ level `level`'s codes."""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
        low = self.acoustic_base + level * self.codebook_size
        mask[low : low + self.codebook_size] = True
        return mask


class CoarseVocabulary(AcousticLayout):
    """The coarse stage's vocabulary: semantic ids 0..K-1, K (SEP or END), then Q' levels of C codes."""

    semantic_vocab: int  # K
    num_coarse: int  # Q'

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


class FineVocabulary(AcousticLayout):
    """The fine stage's vocabulary: Q levels of C codes (the coarse ones as context), then SEP or END (Q * C)."""

    num_coarse: int  # Q'
    num_quantizers: int  # Q (or the L <= Q levels this stage completes)

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


@dataclass
class SemanticLayout(Layout):
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

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return 1 + semantic_frames

    def allowed(self, step: int, previous: torch.Tensor) -> torch.Tensor:
        """(B,) last ids -> (B, V) mask: semantic ids only, and no repeat when trained deduplicated."""
        mask = torch.zeros(previous.shape[0], self.vocab_size, dtype=torch.bool)
        mask[:, : self.semantic_vocab] = True
        if self.dedup:
            mask[torch.arange(previous.shape[0]), previous.cpu()] = False
        return mask


@dataclass
class CoarseLayout(CoarseVocabulary):
    semantic_vocab: int  # K
    codebook_size: int  # C
    num_coarse: int  # Q'
    dedup_semantic: bool = True

    stage = "coarse"

    def prefix(self, semantic_ids: np.ndarray, prompt_coarse: np.ndarray | None = None) -> np.ndarray:
        """semantic (T_s,), optional coarse prompt (T_p, Q') -> [semantic] [SEP] [prompt flat] (n + 1 + T_p * Q',)."""
        ids = dedup_consecutive(semantic_ids) if self.dedup_semantic else semantic_ids
        prompt = np.zeros((0, self.num_coarse), np.int64) if prompt_coarse is None else prompt_coarse
        return np.concatenate([ids, [self.sep], self.code_ids(prompt[:, : self.num_coarse]).reshape(-1)]).astype(np.int64)

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(semantic, acoustic[:, : self.num_coarse])  # (n + 1 + T * Q',)
        start = len(tokens) - len(acoustic) * self.num_coarse - 1  # target index of the first coarse code
        levels = np.full(len(tokens) - 1, IGNORE, dtype=np.int64)
        levels[start:] = np.arange(len(levels) - start) % self.num_coarse
        return Example(tokens, levels)

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return semantic_frames + 1 + acoustic_frames * self.num_coarse


@dataclass
class AcousticOnlyCoarseLayout(CoarseVocabulary):
    """The paper's acoustic-only ablation: the coarse codes alone, no semantic id anywhere.

        tokens: [BOS] c_1,0 .. c_1,Q'-1  c_2,0 ..        vocab 1 + Q' * C

    The coarse vocabulary with K = 0 semantic ids, so BOS takes the SEP id (0) and the code ids start at 1. A
    generation prefix is BOS and the prompt's codes; the semantic ids it is handed are ignored, so the prefix
    layout's sliding windows (`windows.py`) generate any length with no semantic stage at all.
    """

    codebook_size: int  # C
    num_coarse: int  # Q'

    semantic_vocab: ClassVar[int] = 0  # K = 0: not a field, so a checkpoint stores none
    stage = "coarse"
    order = "acoustic_only"

    @property
    def bos(self) -> int:
        return self.sep

    def prefix(self, semantic_ids: np.ndarray | None = None, prompt_coarse: np.ndarray | None = None) -> np.ndarray:
        """prompt (T_p, Q') or None -> [BOS] [prompt flat] (1 + T_p * Q',); `semantic_ids` are ignored."""
        prompt = np.zeros((0, self.num_coarse), np.int64) if prompt_coarse is None else prompt_coarse
        return np.concatenate([[self.bos], self.code_ids(prompt[:, : self.num_coarse]).reshape(-1)]).astype(np.int64)

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(None, acoustic[:, : self.num_coarse])  # (1 + T * Q',)
        levels = np.arange(len(tokens) - 1, dtype=np.int64) % self.num_coarse  # target i is code i: level i % Q'
        return Example(tokens, levels)

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return 1 + acoustic_frames * self.num_coarse


@dataclass
class FineLayout(FineVocabulary):
    codebook_size: int  # C
    num_coarse: int  # Q'
    num_quantizers: int  # Q

    stage = "fine"

    def prefix(self, coarse: np.ndarray, prompt_fine: np.ndarray | None = None) -> np.ndarray:
        """coarse (T, Q'), optional fine prompt (T_p, Q - Q') -> [coarse flat] [SEP] [prompt flat]."""
        prompt = np.zeros((0, self.num_fine), np.int64) if prompt_fine is None else prompt_fine
        parts = [self.code_ids(coarse[:, : self.num_coarse]).reshape(-1), [self.sep],
                 self.code_ids(prompt, self.num_coarse).reshape(-1)]
        return np.concatenate(parts).astype(np.int64)  # (T * Q' + 1 + T_p * (Q - Q'),)

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        tokens = self.prefix(acoustic[:, : self.num_coarse], acoustic[:, self.num_coarse : self.num_quantizers])
        start = len(acoustic) * self.num_coarse  # target index of the first fine code (after SEP)
        levels = np.full(len(tokens) - 1, IGNORE, dtype=np.int64)
        levels[start:] = self.num_coarse + np.arange(len(levels) - start) % self.num_fine
        return Example(tokens, levels)

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return acoustic_frames * self.num_quantizers + 1


def layout_from_dict(values: dict) -> Layout:
    """Inverse of `layout.to_dict()` (as stored in an LM checkpoint)."""
    from audiolm_pl.lm.aligned import AlignedCoarseLayout
    from audiolm_pl.lm.interleaved import InterleavedCoarseLayout, InterleavedFineLayout

    values = dict(values)
    stage, order = values.pop("stage", None), values.pop("order", "prefix")
    kinds = (SemanticLayout, CoarseLayout, FineLayout, AlignedCoarseLayout, InterleavedCoarseLayout, InterleavedFineLayout,
             AcousticOnlyCoarseLayout)
    classes = {(kind.stage, kind.order): kind for kind in kinds}
    if (stage, order) not in classes:
        raise ValueError(f"layout dict has stage {stage!r} and order {order!r}; expected one of {sorted(classes)}")
    return classes[stage, order](**values)
