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

from audiolm_pl.codec.base import CodecOutput, QuantizedCodec
from audiolm_pl.codec.quantizer import QuantizerConfig, ResidualQuantizer

__all__ = ["CodecOutput", "SoundStream", "SoundStreamConfig"]


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


class SoundStream(QuantizedCodec):
    def __init__(self, config: SoundStreamConfig):
        super().__init__()
        self.config = config
        self.hop_length = math.prod(config.strides)
        self.encoder = Encoder(config)
        self.quantizer = ResidualQuantizer(config.latent_dim, config.quantizer)
        self.decoder = Decoder(config)

    codebook_size = property(lambda self: self.config.quantizer.codebook_size)

    def _latents(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(wav).transpose(1, 2)  # (B, T_a * hop) -> (B, D, T_a) -> (B, T_a, D)

    def _waveform(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.transpose(1, 2))  # (B, T_a, D) -> (B, D, T_a) -> (B, T_a * hop)
