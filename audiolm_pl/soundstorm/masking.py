"""The SoundStorm training mask (Borsos et al., 2023, section 3.2) and the cosine schedule it shares with decoding.

For each training example: a random prompt prefix of frames stays whole (every level known); a level q is
picked uniformly; of the frames after the prompt, a share cos(pi / 2 * u), u ~ U(0, 1), of level q is masked
(at least one frame); every level above q is masked there, every level below q is known. The loss is the
cross-entropy of level q's head on its masked frames. Decoding (`decoding.py`) walks the same schedule
backwards: level by level, a level's masked share falls along the cosine from 1 to 0 over its iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


def cosine_share(progress: torch.Tensor | float) -> torch.Tensor | float:
    """progress in [0, 1] -> share of positions still masked: cos(pi / 2 * progress) (1 at 0, 0 at 1)."""
    if isinstance(progress, torch.Tensor):
        return torch.cos(math.pi / 2 * progress)
    return math.cos(math.pi / 2 * progress)


@dataclass
class MaskedBatch:
    codes: torch.Tensor  # (B, T, L) int64: the input codes, MASK id where masked
    level: torch.Tensor  # (B,) int64: the level q each row is trained on
    loss_mask: torch.Tensor  # (B, T) bool: the masked frames of level q (where the loss is taken)
    prompt_frames: torch.Tensor  # (B,) int64: the leading frames left whole


def mask_batch(codes: torch.Tensor, frames: torch.Tensor, mask_id: int, max_prompt_share: float = 0.5,
               generator: Optional[torch.Generator] = None) -> MaskedBatch:
    """codes (B, T, L), frames (B, T) bool True on real frames (False on padding) -> `MaskedBatch`.

    The prompt of a row is uniform in 0..floor(max_prompt_share * n) frames of its n real frames (kept
    below n, so at least one frame is left to mask)."""
    B, T, L = codes.shape
    device = codes.device
    rand = lambda *shape: torch.rand(*shape, device=device, generator=generator)  # noqa: E731
    lengths = frames.sum(dim=1)  # (B,)
    prompt = (rand(B) * (torch.floor(max_prompt_share * lengths) + 1)).long().clamp_max(lengths - 1).clamp_min(0)  # (B,)
    level = (rand(B) * L).long().clamp_max(L - 1)  # (B,) uniform level
    maskable = lengths - prompt  # (B,) frames after the prompt
    count = torch.ceil(cosine_share(rand(B)) * maskable).long().clamp(min=1)  # (B,) masked frames of level q
    position = torch.arange(T, device=device)[None]  # (1, T)
    open_frames = (position >= prompt[:, None]) & frames  # (B, T) after the prompt, not padding
    # a random `count` of the open frames: the open frames of lowest random score
    score = rand(B, T).masked_fill(~open_frames, 2.0)  # (B, T)
    rank = score.argsort(dim=1).argsort(dim=1)  # (B, T) rank of each frame's score in its row
    loss_mask = (rank < count[:, None]) & open_frames  # (B, T)
    levels = torch.arange(L, device=device)[None, None]  # (1, 1, L)
    masked = (loss_mask[:, :, None] & (levels == level[:, None, None])) | (
        open_frames[:, :, None] & (levels > level[:, None, None]))  # (B, T, L)
    return MaskedBatch(codes.masked_fill(masked, mask_id), level, loss_mask, prompt)
