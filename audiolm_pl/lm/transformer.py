"""The decoder-only transformer shared by the semantic, coarse and fine stages.

Pre-norm blocks, `scaled_dot_product_attention`, T5-style relative position bias or rotary
embeddings (config), dropout, optional activation checkpointing, and a KV cache for decoding.
Both position schemes depend only on the distance between query and key, so a KV cache can
drop its oldest entries (a sliding window) and keep decoding past the trained context.
`Block` is the unit to name in an FSDP auto-wrap policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from audiolm_pl.lm.kv_cache import KVCache


@dataclass
class TransformerConfig:
    """Architecture of `TransformerLM`; the vocabulary size comes from the stage's layout."""

    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_ff: int = 256
    dropout: float = 0.0
    position: str = "t5"  # "t5" (relative position bias, as in the paper) | "rotary"
    rel_buckets: int = 32  # T5 bias: number of distance buckets
    rel_max_distance: int = 128  # T5 bias: distances past this share the last bucket
    rotary_base: float = 10000.0
    max_seq_len: int = 1024  # trained context; generation slides a window of this length
    activation_checkpointing: bool = False
    # training: `torch.compile` each block (TokenLMModule.configure_model); the model itself never compiles
    compile: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.n_head={self.n_head}")
        if self.position not in ("t5", "rotary"):
            raise ValueError(f"model.position must be 't5' or 'rotary', got {self.position!r}")
        if self.position == "rotary" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rotary needs an even head size; d_model / n_head = {self.d_model // self.n_head}")


class RelativePositionBias(nn.Module):
    """T5 bucketed relative position bias for causal attention: one learned scalar per (bucket, head)."""

    def __init__(self, n_head: int, num_buckets: int, max_distance: int):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bias = nn.Embedding(num_buckets, n_head)

    def bucket(self, distance: torch.Tensor) -> torch.Tensor:
        """distance = query_pos - key_pos >= 0 -> bucket id; exact for small, log-spaced for large."""
        exact = self.num_buckets // 2
        distance = distance.clamp_min(0)
        log_ratio = torch.log(distance.float().clamp_min(1) / exact) / math.log(self.max_distance / exact)
        large = (exact + log_ratio * (self.num_buckets - exact)).long().clamp_max(self.num_buckets - 1)
        return torch.where(distance < exact, distance, large)

    def forward(self, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """query_pos (Tq,), key_pos (Tk,) -> bias (1, nh, Tq, Tk)."""
        distance = query_pos[:, None] - key_pos[None, :]  # (Tq, Tk)
        return self.bias(self.bucket(distance)).permute(2, 0, 1).unsqueeze(0)  # (1, nh, Tq, Tk)


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (T,) -> cos, sin (T, hs / 2) for rotating query/key pairs."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hs / 2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs) rotated pairwise by the angles of its positions."""
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()  # (B, nh, T, hs / 2) each
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, nh, T, hs / 2, 2)
    return rotated.flatten(-2).type_as(x)  # (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.d_model // config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: "AttentionContext", layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if context.rotary is not None:
            cos, sin = context.rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if context.cache is not None:
            k, v = context.cache.update(layer, k, v)  # (B, nh, T_past + T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=context.mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=context.mask is None and context.causal,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-norm transformer block; the FSDP wrapping unit."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, context: "AttentionContext", layer: int) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), context, layer)
        return x + self.mlp(self.norm_mlp(x))


@dataclass
class AttentionContext:
    """What every block needs besides its input: position terms, mask and the cache."""

    mask: Optional[torch.Tensor]  # float (1, nh, Tq, Tk) bias + causal -inf, or None
    causal: bool  # with mask None: let SDPA apply its own causal mask
    rotary: Optional[tuple[torch.Tensor, torch.Tensor]]  # cos, sin (Tq, hs / 2) or None
    cache: Optional[KVCache]


class TransformerLM(nn.Module):
    """tokens (B, T) int64 -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config: TransformerConfig, vocab_size: int, condition_vocab: int = 0):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, config.d_model)
        # condition ids (B, T, w) whose embeddings are summed into each input position (aligned layout)
        self.cond_emb = nn.Embedding(condition_vocab, config.d_model) if condition_vocab else None
        self.drop = nn.Dropout(config.dropout)
        self.rel_bias = (
            RelativePositionBias(config.n_head, config.rel_buckets, config.rel_max_distance)
            if config.position == "t5" else None
        )
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (nanoGPT)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))  # GPT-2 residual scaling

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def new_cache(self, batch: int, capacity: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `capacity` positions."""
        c = self.config
        weight = self.tok_emb.weight
        return KVCache(c.n_layer, batch, c.n_head, c.d_model // c.n_head, capacity,
                       device or weight.device, dtype or weight.dtype)

    def _context(self, T: int, device, cache: Optional[KVCache]) -> AttentionContext:
        past = cache.length if cache is not None else 0
        start = cache.offset + past if cache is not None else 0
        query_pos = torch.arange(start, start + T, device=device)  # (T,) absolute positions
        key_pos = torch.arange(start - past, start + T, device=device)  # (T_past + T,)
        rotary = None
        if self.config.position == "rotary":
            rotary = rotary_tables(query_pos, self.config.d_model // self.config.n_head, self.config.rotary_base)
        if self.rel_bias is None and (past == 0 or T == 1):
            return AttentionContext(mask=None, causal=T > 1, rotary=rotary, cache=cache)
        future = key_pos[None, :] > query_pos[:, None]  # (T, T_past + T) True where masked
        mask = torch.zeros(future.shape, device=device).masked_fill(future, float("-inf"))[None, None]  # (1, 1, Tq, Tk)
        if self.rel_bias is not None:
            mask = mask + self.rel_bias(query_pos, key_pos)  # (1, nh, Tq, Tk)
        return AttentionContext(mask=mask.to(self.tok_emb.weight.dtype), causal=False, rotary=rotary, cache=cache)

    def backbone(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """Embedded tokens x (B, T, C) -> final hidden states (B, T, C); appends T positions to `cache`."""
        T = x.shape[1]
        context = self._context(T, x.device, cache)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            if self.config.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, context, layer, use_reentrant=False)
            else:
                x = block(x, context, layer)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, cache: Optional[KVCache] = None,
                conditions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, T) int64 [+ conditions (B, T, w) int64] -> logits (B, T, vocab_size); with `cache`,
        T new positions after it."""
        x = self.tok_emb(tokens)  # (B, T, C)
        if (conditions is None) != (self.cond_emb is None):
            raise ValueError("this model was built " + ("with" if self.cond_emb is not None else "without")
                             + " condition embeddings; pass conditions exactly when it has them")
        if conditions is not None:
            x = x + self.cond_emb(conditions).sum(dim=2)  # (B, T, C)
        return self.head(self.backbone(x, cache))  # (B, T, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
