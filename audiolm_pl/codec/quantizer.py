"""Residual VQ for the codec: `vector_quantize_pytorch.ResidualVQ` with the SoundStream recipe
(k-means initialisation, EMA codebooks, dead-code replacement, quantizer dropout)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ
from vector_quantize_pytorch.residual_vq import get_maybe_sync_seed


@dataclass
class QuantizerConfig:
    num_quantizers: int = 12  # Q
    codebook_size: int = 1024
    codebook_dim: int = 0  # 0 = the latent dimension; smaller = ONE projection to this many dims, shared by all levels
    kmeans_init: bool = True  # codebooks start as k-means centroids of the first batch
    kmeans_iters: int = 10
    ema_decay: float = 0.99  # codebooks follow an exponential moving average of their assignments
    dead_code_threshold: float = 2.0  # codes used less than this (EMA count) are re-seeded from the batch
    quantizer_dropout: bool = True  # train with a random number of levels so 1..Q all decode
    quantizer_dropout_probability: float = 1.0  # share of steps that drop levels; the rest use all Q (DAC: 0.5)
    commitment_weight: float = 1.0


@dataclass
class QuantizerOutput:
    latents: torch.Tensor  # (B, T_a, D) quantized latents
    codes: torch.Tensor  # (B, T_a, Q) int64; -1 on dropped levels
    commitment_loss: torch.Tensor  # ()


class ResidualQuantizer(nn.Module):
    def __init__(self, dim: int, config: QuantizerConfig):
        super().__init__()
        self.config = config
        self.rvq = ResidualVQ(
            dim=dim,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            codebook_dim=config.codebook_dim or None,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            decay=config.ema_decay,
            threshold_ema_dead_code=config.dead_code_threshold,
            quantize_dropout=config.quantizer_dropout,
            commitment_weight=config.commitment_weight,
        )

    def forward(self, latents: torch.Tensor, num_quantizers: int | None = None) -> QuantizerOutput:
        """latents (B, T_a, D) -> quantized; `num_quantizers` < Q evaluates a lower bitrate."""
        if num_quantizers is not None and not self.training:
            codes = self.encode(latents)[:, :, :num_quantizers]  # (B, T_a, n)
            return QuantizerOutput(self.decode(codes), codes, latents.new_zeros(()))
        # one draw per step, the same on every rank (the codebooks' EMA statistics are all-reduced per level)
        draw, enabled = random.Random(get_maybe_sync_seed(latents.device)), self.rvq.quantize_dropout
        self.rvq.quantize_dropout = enabled and draw.random() < self.config.quantizer_dropout_probability  # this call only
        try:
            with torch.autocast(latents.device.type, enabled=False):  # distances in fp32 under bf16
                quantized, codes, losses = self.rvq(latents.float(), rand_quantize_dropout_fixed_seed=draw.randrange(10_000))
        finally:
            self.rvq.quantize_dropout = enabled  # decoding fewer than Q levels requires it
        return QuantizerOutput(quantized.to(latents.dtype), codes, losses.sum())

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T_a, D) -> codes (B, T_a, Q), every level."""
        was_training = self.rvq.training
        self.rvq.eval()  # no dropout, no codebook updates
        _, codes, _ = self.rvq(latents.float())
        self.rvq.train(was_training)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_a, q<=Q) -> latents (B, T_a, D); missing levels count as dropped."""
        return self.rvq.get_output_from_indices(codes)  # (B, T_a, D)
