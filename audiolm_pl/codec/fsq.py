"""Residual finite scalar quantization with one projection per level (DAC-style factorised codes).

Each level projects the residual (D dims) to a few dims, rounds each of them to a fixed grid
(`vector_quantize_pytorch.FSQ`: levels [4, 4, 4, 4, 4] = 1,024 codes) and projects back; the
next level quantizes what is left. FSQ has no codebook to learn, so no code can die and nothing
collapses, and unlike `ResidualFSQ` (one projection shared by every level) each level picks its
own directions of the latent, so Q levels can carry up to Q x len(levels) numbers per frame.

    latents (B, T_a, D) ──level 1..Q──▶ codes (B, T_a, Q) in [0, prod(levels))
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import nn
from vector_quantize_pytorch import FSQ
from vector_quantize_pytorch.residual_vq import get_maybe_sync_seed

from audiolm_pl.codec.quantizer import QuantizerOutput


@dataclass
class FSQConfig:
    num_quantizers: int = 8  # Q
    levels: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4])  # codebook size = prod(levels)
    quantizer_dropout: bool = True  # train with a random number of levels so 1..Q all decode
    quantizer_dropout_probability: float = 0.5  # share of steps that drop levels (DAC: 0.5)


class FactorisedResidualFSQ(nn.Module):
    def __init__(self, dim: int, config: FSQConfig):
        super().__init__()
        if config.num_quantizers < 1:
            raise ValueError(f"quantizer.num_quantizers must be >= 1, got {config.num_quantizers}")
        if not config.levels or min(config.levels) < 3:
            raise ValueError(f"quantizer.levels must be a list of ints >= 3, got {config.levels}")
        self.config = config
        self.layers = nn.ModuleList(FSQ(levels=list(config.levels), dim=dim) for _ in range(config.num_quantizers))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _standardise(self, layer: FSQ, residual: torch.Tensor) -> None:
        """Data-dependent init (as k-means init is for VQ codebooks): rescale the level's input projection
        so that its outputs have mean 0 and std 1 over the first batch's frames, all ranks' frames together.
        A fresh encoder's latents barely vary from frame to frame, so otherwise every frame falls into the
        same few grid cells and training can settle on a constant code (seen at lr 2e-3)."""
        projected = layer.project_in(residual.reshape(-1, residual.shape[-1]).float())  # (N, d)
        stats = torch.stack([projected.sum(0), projected.pow(2).sum(0), projected.new_full((projected.shape[1],), projected.shape[0])])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        mean = stats[0] / stats[2]
        std = (stats[1] / stats[2] - mean.pow(2)).clamp_min(1e-8).sqrt()
        layer.project_in.weight.div_(std[:, None])
        layer.project_in.bias.sub_(mean).div_(std)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.config.levels)

    def forward(self, latents: torch.Tensor, num_quantizers: int | None = None) -> QuantizerOutput:
        """latents (B, T_a, D) -> quantized sum of the first n levels (straight-through), codes (B, T_a, Q).

        Training drops the levels above a random n on a share of steps (the same draw on every rank);
        `num_quantizers` fixes n. Dropped levels have code -1.
        """
        levels = self.config.num_quantizers if num_quantizers is None else num_quantizers
        if self.training and self.config.quantizer_dropout and num_quantizers is None:
            draw = random.Random(get_maybe_sync_seed(latents.device))
            if draw.random() < self.config.quantizer_dropout_probability:
                levels = draw.randrange(1, self.config.num_quantizers + 1)
        with torch.autocast(latents.device.type, enabled=False):  # rounding in fp32 under bf16
            residual, quantized = latents.float(), torch.zeros_like(latents, dtype=torch.float32)
            codes = []
            initialise = self.training and not bool(self.initialised)
            if initialise:  # the first batch initialises (and uses) every level
                levels = self.config.num_quantizers
            for layer in self.layers[:levels]:
                if initialise:
                    self._standardise(layer, residual)
                level_out, level_codes = layer(residual)  # (B, T_a, D), (B, T_a)
                residual = residual - level_out.detach()
                quantized = quantized + level_out
                codes.append(level_codes)
            self.initialised.fill_(True)
        dropped = latents.new_full((*latents.shape[:2], self.config.num_quantizers - levels), -1, dtype=torch.long)
        codes = torch.cat([torch.stack(codes, dim=-1).long(), dropped], dim=-1)  # (B, T_a, Q)
        return QuantizerOutput(quantized.to(latents.dtype), codes, latents.new_zeros(()))

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T_a, D) -> codes (B, T_a, Q), every level."""
        was_training = self.training
        self.eval()
        codes = self(latents, self.config.num_quantizers).codes
        self.train(was_training)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_a, q <= Q) -> latents (B, T_a, D); levels past q (or coded -1) add nothing."""
        total = None
        for level in range(codes.shape[-1]):
            level_codes = codes[..., level]  # (B, T_a)
            out = self.layers[level].indices_to_codes(level_codes.clamp_min(0))  # (B, T_a, D)
            out = out * (level_codes >= 0).unsqueeze(-1)
            total = out if total is None else total + out
        return total
