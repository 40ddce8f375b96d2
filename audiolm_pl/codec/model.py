"""SoundStream (Zeghidour et al., 2021): a causal convolutional autoencoder with residual VQ.

    wav (B, T) ──Encoder──▶ latents (B, D, T/320) ──RVQ──▶ codes (B, T/320, Q) ──Decoder──▶ wav (B, T)

Strides (2, 4, 5, 8) turn 16 kHz audio into 50 frames a second. Every convolution is causal
(padded on the left only), so the codec can run as a stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from audiolm_pl.codec.quantizer import QuantizerConfig, QuantizerOutput, ResidualQuantizer
from audiolm_pl.tokens import AcousticCodec


@dataclass
class SoundStreamConfig:
    kind: str = "soundstream"  # the codec registry key (audiolm_pl/registry.py CODECS)
    sample_rate: int = 16000
    channels: int = 32  # width of the first encoder layer (paper C = 32)
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    latent_dim: int = 256  # D, the dimension that is quantized
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


class CausalConv1d(nn.Module):
    """Conv1d padded on the left so output t sees inputs <= t only; stride s maps T -> T / s."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.left_pad = dilation * (kernel_size - 1) + 1 - stride
        self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.left_pad, 0)))  # (B, C_out, T / stride)


class CausalConvTranspose1d(nn.Module):
    """Upsampling by `stride`; the samples that would depend on future frames are cut off."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[..., : x.shape[-1] * self.stride]  # (B, C_out, T * stride)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(), CausalConv1d(channels, channels, 7, dilation=dilation), nn.ELU(), CausalConv1d(channels, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def residual_stack(channels: int) -> list[nn.Module]:
    return [ResidualUnit(channels, dilation) for dilation in (1, 3, 9)]


class Encoder(nn.Module):
    def __init__(self, config: SoundStreamConfig):
        super().__init__()
        channels = config.channels
        layers: list[nn.Module] = [CausalConv1d(1, channels, 7)]
        for stride in config.strides:
            layers += residual_stack(channels)
            layers += [nn.ELU(), CausalConv1d(channels, 2 * channels, 2 * stride, stride=stride)]
            channels *= 2
        layers += [nn.ELU(), CausalConv1d(channels, config.latent_dim, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(wav[:, None])  # (B, T) -> (B, D, T / hop)


class Decoder(nn.Module):
    def __init__(self, config: SoundStreamConfig):
        super().__init__()
        channels = config.channels * 2 ** len(config.strides)
        layers: list[nn.Module] = [CausalConv1d(config.latent_dim, channels, 7)]
        for stride in reversed(config.strides):
            layers += [nn.ELU(), CausalConvTranspose1d(channels, channels // 2, stride)]
            channels //= 2
            layers += residual_stack(channels)
        layers += [nn.ELU(), CausalConv1d(channels, 1, 7)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)[:, 0]  # (B, D, T_a) -> (B, T_a * hop)


@dataclass
class CodecOutput:
    wav: torch.Tensor  # (B, T) reconstruction
    codes: torch.Tensor  # (B, T_a, Q) int64; -1 on levels dropped by quantizer dropout
    commitment_loss: torch.Tensor  # () mean over the levels used


class SoundStream(AcousticCodec):
    def __init__(self, config: SoundStreamConfig):
        super().__init__()
        self.config = config
        self.hop_length = math.prod(config.strides)
        self.encoder = Encoder(config)
        self.quantizer = ResidualQuantizer(config.latent_dim, config.quantizer)
        self.decoder = Decoder(config)

    sample_rate = property(lambda self: self.config.sample_rate)
    frame_rate = property(lambda self: self.config.sample_rate / self.hop_length)
    codebook_size = property(lambda self: self.config.quantizer.codebook_size)
    num_quantizers = property(lambda self: self.config.quantizer.num_quantizers)

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"expected wav of shape (B, T), got {tuple(wav.shape)}")
        return F.pad(wav, (0, -wav.shape[1] % self.hop_length))  # (B, T') with T' a multiple of the hop

    def forward(self, wav: torch.Tensor, num_quantizers: int | None = None) -> CodecOutput:
        """Training/eval pass: wav (B, T) -> reconstruction (B, T) via (possibly dropped-out) codes."""
        length = wav.shape[1]
        latents = self.encoder(self._pad(wav)).transpose(1, 2)  # (B, T_a, D)
        quantized: QuantizerOutput = self.quantizer(latents, num_quantizers)
        wav_out = self.decoder(quantized.latents.transpose(1, 2))[:, :length]  # (B, T)
        return CodecOutput(wav_out, quantized.codes, quantized.commitment_loss)

    @torch.no_grad()
    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) -> unquantized latents (B, ceil(T / hop), D)."""
        return self.encoder(self._pad(wav)).transpose(1, 2)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T_a, D), quantized or not -> wav (B, T_a * hop)."""
        return self.decoder(latents.transpose(1, 2))

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) -> codes (B, ceil(T / hop), Q) int64 (all levels)."""
        return self.quantizer.encode(self.encode_latents(wav))  # (B, T_a, Q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T_a, q) with q <= Q -> wav (B, T_a * hop); fewer levels = lower bitrate."""
        if codes.dim() != 3 or not 1 <= codes.shape[2] <= self.num_quantizers:
            raise ValueError(f"expected codes (B, T_a, q) with 1 <= q <= {self.num_quantizers}, got {tuple(codes.shape)}")
        return self.decode_latents(self.quantizer.decode(codes))  # (B, T_a * hop)
