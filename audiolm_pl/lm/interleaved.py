"""Frame-synchronous layouts: each stretch of time carries its condition right before its codes.

    coarse: s_0 .. s_{L-1} | s_L   c(0, 0..Q'-1) c(1, 0..Q'-1) | s_L+1 c(2, ..) c(3, ..) | ...
    fine:   c(0) .. c(L-1) | c(L)  f(0, Q'..Q-1)               | c(L+1) f(1, ..)        | ...

Block k holds the condition of block k + L (L = `lookahead` blocks, so the model sees a little of
what comes next, as coarticulation needs) and the targets of block k: for the coarse stage one
semantic id and the `frames_per_id` acoustic frames it covers (all Q' coarse levels, frame by frame);
for the fine stage one frame's Q' coarse codes and its Q - Q' fine codes. Past the end of the
condition stream stands END. Only the targets carry a loss.

The paper's layouts (layouts.py) put the whole condition before the first code, so the model must
learn where in that prefix each frame's condition sits; a transformer of our CPU sizes trained for
minutes does not. Here the condition of frame t is always a few positions back, and generation runs
for any length with the sliding-window KV cache, since a block needs only its neighbourhood.
Semantic ids are not deduplicated: their position is their time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from audiolm_pl.lm.layouts import IGNORE, AcousticLayout, CoarseVocabulary, Example, FineVocabulary


@dataclass
class Blocks:
    """A stream cut into blocks: vocabulary ids of every block's condition and targets."""

    conditions: np.ndarray  # (n, c) ids of block k's own condition
    targets: np.ndarray  # (n, t) ids of block k's targets


class InterleavedLayout(AcousticLayout):
    """What both frame-synchronous stages share; subclasses say what a block's condition and targets are."""

    lookahead: int
    order = "interleaved"

    # -- to be defined by the stage ------------------------------------------------------
    @property
    @abc.abstractmethod
    def target_levels(self) -> np.ndarray:
        """(t,) RVQ level of each target position of a block."""

    @property
    @abc.abstractmethod
    def condition_width(self) -> int:
        """c: ids of a block's condition."""

    # -- shared --------------------------------------------------------------------------
    @property
    def end(self) -> int:
        """Stands for the condition of a block past the end of the stream: the vocabulary's SEP id."""
        return self.sep

    @property
    def block_size(self) -> int:
        return self.condition_width + len(self.target_levels)

    def _length(self, blocks: int) -> int:
        """Tokens of the head and `blocks` blocks."""
        return self.lookahead * self.condition_width + blocks * self.block_size

    def head(self, conditions: np.ndarray) -> np.ndarray:
        """(n, c) -> the first `lookahead` blocks' conditions, END-padded, (L * c,)."""
        head = np.full((self.lookahead, self.condition_width), self.end, np.int64)  # (L, c)
        known = min(self.lookahead, len(conditions))
        head[:known] = conditions[:known]
        return head.reshape(-1)

    def shifted(self, conditions: np.ndarray) -> np.ndarray:
        """(n, c) -> the condition each block carries: that of block k + L, END past the end (n, c)."""
        shifted = np.full_like(conditions, self.end)
        if len(conditions) > self.lookahead:
            shifted[: len(conditions) - self.lookahead] = conditions[self.lookahead :]
        return shifted

    def sequence(self, blocks: Blocks) -> Example:
        """All blocks as one sequence with the level of every target (IGNORE on conditions)."""
        body = np.concatenate([self.shifted(blocks.conditions), blocks.targets], axis=1)  # (n, c + t)
        tokens = np.concatenate([self.head(blocks.conditions), body.reshape(-1)])  # (L * c + n * (c + t),)
        block_levels = np.concatenate([np.full(self.condition_width, IGNORE), self.target_levels])  # (c + t,)
        levels = np.concatenate([np.full(self.lookahead * self.condition_width, IGNORE),
                                 np.tile(block_levels, len(blocks.targets))])  # level of every token
        return Example(tokens.astype(np.int64), levels[1:].astype(np.int64))  # targets are tokens[1:]

    def prompt(self, conditions: np.ndarray, known_targets: np.ndarray) -> np.ndarray:
        """Prefix for generation: the head and the first P blocks, whose targets (P, t) are given."""
        known = len(known_targets)
        body = np.concatenate([self.shifted(conditions)[:known], known_targets], axis=1)  # (P, c + t)
        return np.concatenate([self.head(conditions), body.reshape(-1)]).astype(np.int64)

    def step_rule(self, conditions: torch.Tensor, first_block: int):
        """allowed(step, previous) for generating blocks first_block.. of these conditions (B, n, c):
        a block's condition ids are forced (a one-hot mask per row), its targets keep to their level."""
        shifted = torch.stack([torch.from_numpy(self.shifted(row.cpu().numpy())) for row in conditions])  # (B, n, c)
        level_masks = [self.level_mask(int(level)) for level in self.target_levels]
        rows = torch.arange(conditions.shape[0])

        def allowed(step: int, previous: torch.Tensor) -> torch.Tensor:
            block, position = first_block + step // self.block_size, step % self.block_size
            if position >= self.condition_width:
                return level_masks[position - self.condition_width]  # (V,)
            mask = torch.zeros(conditions.shape[0], self.vocab_size, dtype=torch.bool)  # (B, V)
            mask[rows, shifted[:, block, position]] = True
            return mask

        return allowed

    def generated_targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated ids (B, m * (c + t)) -> the targets of those m blocks (B, m, t)."""
        return tokens.reshape(tokens.shape[0], -1, self.block_size)[:, :, self.condition_width :]


@dataclass
class InterleavedCoarseLayout(InterleavedLayout, CoarseVocabulary):
    semantic_vocab: int  # K: semantic ids 0..K-1, END = K
    codebook_size: int  # C: code c of level q is K + 1 + q * C + c
    num_coarse: int  # Q'
    frames_per_id: int = 2  # acoustic frames per semantic id (50 Hz / 25 Hz)
    lookahead: int = 2  # semantic ids of look-ahead (80 ms at 25 Hz)

    stage = "coarse"

    @property
    def condition_width(self) -> int:
        return 1

    @property
    def target_levels(self) -> np.ndarray:
        return np.tile(np.arange(self.num_coarse), self.frames_per_id)  # (r * Q',)

    def blocks(self, semantic: np.ndarray, coarse: np.ndarray) -> Blocks:
        """semantic (n,), coarse codes (>= r * n, Q') -> n blocks (fewer if the codes run out)."""
        n = min(len(semantic), len(coarse) // self.frames_per_id)
        codes = self.code_ids(coarse[: n * self.frames_per_id, : self.num_coarse])  # (r * n, Q')
        return Blocks(semantic[:n, None].astype(np.int64), codes.reshape(n, -1))  # (n, 1), (n, r * Q')

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        return self.sequence(self.blocks(semantic, acoustic))

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return self._length(semantic_frames)  # one block per semantic id


@dataclass
class InterleavedFineLayout(InterleavedLayout, FineVocabulary):
    codebook_size: int  # C: code c of level q is q * C + c, END = Q * C
    num_coarse: int  # Q'
    num_quantizers: int  # Q
    lookahead: int = 2  # frames of coarse look-ahead

    stage = "fine"

    @property
    def condition_width(self) -> int:
        return self.num_coarse

    @property
    def target_levels(self) -> np.ndarray:
        return np.arange(self.num_coarse, self.num_quantizers)  # (Q - Q',)

    def blocks(self, coarse: np.ndarray, fine: np.ndarray) -> Blocks:
        """coarse (T, Q'), fine (T, Q - Q') codes -> T blocks."""
        return Blocks(self.code_ids(coarse, 0), self.code_ids(fine, self.num_coarse))

    def example(self, semantic: np.ndarray, acoustic: np.ndarray) -> Example:
        return self.sequence(self.blocks(acoustic[:, : self.num_coarse], acoustic[:, self.num_coarse : self.num_quantizers]))

    def sequence_length(self, semantic_frames: int, acoustic_frames: int) -> int:
        return self._length(acoustic_frames)  # one block per acoustic frame
