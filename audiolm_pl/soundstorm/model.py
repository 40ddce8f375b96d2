"""The SoundStorm-style acoustic model: a bidirectional transformer over acoustic frames.

Every frame's input is the sum of the embedding of the semantic id aligned to it (frame f reads id
f // r, r = 50 Hz / 25 Hz, PAD past the ids' end, as `lm/aligned.py`), of its phase f % r, and of
one embedding per RVQ level: the frame's code of that level, or the level's MASK id where the code is
not known. One output head per level predicts that level's codes. The blocks are the LMs' own
(`lm/transformer.py`), run without a causal mask; positions are rotary or a T5 bias with one half of
its buckets per direction, both functions of the query - key distance only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from audiolm_pl.lm.transformer import AttentionContext, Block, RelativePositionBias, TransformerConfig, rotary_tables


@dataclass
class SoundStormConfig(TransformerConfig):
    """`TransformerConfig` (n_layer, n_head, d_model, ...); `max_seq_len` counts acoustic frames here:
    the trained context, past which generation goes window by window."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compile:  # TokenLMModule compiles the LMs' blocks; this stage's module has no such step
            raise ValueError("model.compile is not supported by the soundstorm stage; set it to false")


class BidirectionalPositionBias(RelativePositionBias):
    """T5 bucketed relative position bias for attention both ways: `num_buckets // 2` buckets of |distance|
    for keys at or before the query, as many for keys after it."""

    def __init__(self, n_head: int, num_buckets: int, max_distance: int):
        super().__init__(n_head, num_buckets // 2, max_distance)
        self.bias = nn.Embedding(2 * self.num_buckets, n_head)

    def forward(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """query_pos (Tq,), key_pos (Tk,) -> bias (1, nh, Tq, Tk)."""
        distance = query_pos[:, None] - key_pos[None, :]  # (Tq, Tk)
        bucket = self.bucket(distance.abs()) + self.num_buckets * (distance < 0)  # (Tq, Tk)
        return self.bias(bucket).permute(2, 0, 1).unsqueeze(0)  # (1, nh, Tq, Tk)


class SoundStormModel(nn.Module):
    """semantic ids per frame (B, T) + codes (B, T, L) with MASK = C where unknown -> hidden (B, T, d);
    `level_logits(hidden, level)` -> (B, T, C)."""

    def __init__(self, config: SoundStormConfig, semantic_vocab: int, codebook_size: int, num_levels: int,
                 frames_per_id: int):
        super().__init__()
        self.config = config
        self.semantic_vocab, self.codebook_size = semantic_vocab, codebook_size
        self.num_levels, self.frames_per_id = num_levels, frames_per_id
        d = config.d_model
        self.semantic_emb = nn.Embedding(semantic_vocab + 1, d)  # id K: PAD (no semantic id at this frame)
        self.phase_emb = nn.Embedding(frames_per_id, d)
        self.code_emb = nn.Embedding(num_levels * (codebook_size + 1), d)  # level q: q * (C + 1) + code, MASK = C
        self.drop = nn.Dropout(config.dropout)
        self.rel_bias = (BidirectionalPositionBias(config.n_head, config.rel_buckets, config.rel_max_distance)
                         if config.position == "t5" else None)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm = nn.LayerNorm(d)
        self.heads = nn.Parameter(torch.empty(num_levels, codebook_size, d))  # one output head per level
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.heads, std=0.02)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))  # GPT-2 residual scaling

    @property
    def mask_id(self) -> int:
        """The code that marks a masked (unknown) position of any level."""
        return self.codebook_size

    def attention_context(self, T: int, device, frames: torch.Tensor | None = None) -> AttentionContext:
        """What every block needs for T frames (position terms, padding mask); `forward` builds it, or takes one
        built once for many passes over the same frames (decoding)."""
        positions = torch.arange(T, device=device)  # (T,)
        rotary = None
        if self.config.position == "rotary":
            rotary = rotary_tables(positions, self.config.d_model // self.config.n_head, self.config.rotary_base)
        mask = None
        if self.rel_bias is not None:
            # contiguous: attention would otherwise copy the permuted bias in every layer
            mask = self.rel_bias(positions, positions).to(self.code_emb.weight.dtype).contiguous()  # (1, nh, T, T)
        if frames is not None and not bool(frames.all()):  # padded rows: no frame attends to the padding
            padding = torch.zeros(frames.shape, device=device, dtype=self.code_emb.weight.dtype)
            padding = padding.masked_fill(~frames, float("-inf"))[:, None, None]  # (B, 1, 1, T)
            mask = padding if mask is None else mask + padding  # (B, nh, T, T)
        return AttentionContext(mask=mask, causal=False, rotary=rotary, cache=None)

    def embed(self, semantic: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """semantic (B, T) ids per frame (K = PAD), codes (B, T, L) (C = MASK) -> input embeddings (B, T, d)."""
        B, T, L = codes.shape
        if L != self.num_levels:
            raise ValueError(f"codes have {L} levels; this model was built for {self.num_levels}")
        offsets = torch.arange(L, device=codes.device) * (self.codebook_size + 1)  # (L,)
        phase = torch.arange(T, device=codes.device) % self.frames_per_id  # (T,)
        x = self.code_emb(codes + offsets).sum(dim=2)  # (B, T, d)
        return x + self.semantic_emb(semantic) + self.phase_emb(phase)[None]  # (B, T, d)

    def forward(self, semantic: torch.Tensor, codes: torch.Tensor, frames: torch.Tensor | None = None,
                context: AttentionContext | None = None) -> torch.Tensor:
        """semantic (B, T), codes (B, T, L) [, frames (B, T) bool: False on padding] -> hidden states (B, T, d);
        every real frame sees every real frame. `context`: `attention_context` of these frames, if built already."""
        x = self.drop(self.embed(semantic, codes))  # (B, T, d)
        if context is None:
            context = self.attention_context(x.shape[1], x.device, frames)
        for layer, block in enumerate(self.blocks):
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, context, layer, use_reentrant=False)
            else:
                x = block(x, context, layer)
        return self.norm(x)

    def level_logits(self, hidden: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        """hidden (B, T, d), level: int or (B,) per row -> logits (B, T, C) of that level's head."""
        if isinstance(level, int):
            return F.linear(hidden, self.heads[level])  # (B, T, C)
        return torch.einsum("btd,bcd->btc", hidden, self.heads[level])  # (B, T, C)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def align_semantic(semantic: torch.Tensor, num_frames: int, frames_per_id: int, pad_id: int) -> torch.Tensor:
    """semantic ids (B, T_s) at their own rate -> the id each of `num_frames` acoustic frames reads (B, num_frames):
    frame f reads id f // frames_per_id, `pad_id` past the ids' end."""
    index = torch.arange(num_frames, device=semantic.device) // frames_per_id  # (T,)
    inside = index < semantic.shape[1]
    aligned = semantic[:, index.clamp_max(max(0, semantic.shape[1] - 1))] if semantic.shape[1] else \
        semantic.new_full((semantic.shape[0], num_frames), pad_id)  # (B, T)
    return torch.where(inside[None], aligned, torch.full_like(aligned, pad_id))  # (B, T)
