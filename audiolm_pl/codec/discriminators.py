"""SoundStream's discriminators: a multi-scale waveform discriminator and an STFT discriminator.

Each returns, per sub-discriminator, its logits and its intermediate feature maps (for the
feature-matching loss) as a `DiscriminatorOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class DiscriminatorConfig:
    wave_scales: int = 3  # waveform discriminators at 1x, 2x, 4x downsampling
    wave_channels: int = 16
    stft_window: int = 1024  # W
    stft_hop: int = 256  # H
    stft_channels: int = 32


@dataclass
class DiscriminatorOutput:
    logits: list[torch.Tensor] = field(default_factory=list)  # one per sub-discriminator
    features: list[list[torch.Tensor]] = field(default_factory=list)  # feature maps per sub-discriminator


class WaveDiscriminator(nn.Module):
    """MelGAN-style strided, grouped 1-D convolutions over the waveform."""

    def __init__(self, channels: int):
        super().__init__()
        widths = [channels, 4 * channels, 16 * channels, 64 * channels, 64 * channels]
        layers = [weight_norm(nn.Conv1d(1, widths[0], 15, padding=7))]
        for previous, width in zip(widths[:-1], widths[1:]):
            groups = max(1, previous // 4)
            layers.append(weight_norm(nn.Conv1d(previous, width, 41, stride=4, padding=20, groups=groups)))
        layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.head = weight_norm(nn.Conv1d(widths[-1], 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = wav[:, None], []  # (B, 1, T)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.head(x), features  # (B, 1, T / 256)


class MultiScaleWaveDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(WaveDiscriminator(config.wave_channels) for _ in range(config.wave_scales))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        out = DiscriminatorOutput()
        for scale, discriminator in enumerate(self.discriminators):
            if scale:
                wav = F.avg_pool1d(wav[:, None], 4, stride=2, padding=1)[:, 0]  # (B, T / 2)
            logits, features = discriminator(wav)
            out.logits.append(logits)
            out.features.append(features)
        return out


class STFTDiscriminator(nn.Module):
    """2-D convolutions over the complex STFT (real and imaginary parts as two channels).

    Always runs in fp32: under bf16 autocast the STFT and its gradients lose too much precision.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.window, self.hop = config.stft_window, config.stft_hop
        self.register_buffer("hann", torch.hann_window(config.stft_window), persistent=False)
        c = config.stft_channels
        widths = [2, c, 2 * c, 4 * c, 4 * c, 8 * c]
        strides = [(1, 1), (2, 1), (2, 2), (2, 1), (2, 2)]  # (frequency, time)
        self.layers = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 3) if i else (7, 7), stride=s, padding=(2, 1) if i else (3, 3)))
            for i, (a, b, s) in enumerate(zip(widths[:-1], widths[1:], strides))
        )
        self.head = weight_norm(nn.Conv2d(widths[-1], 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        with torch.autocast(wav.device.type, enabled=False):
            spec = torch.stft(wav.float(), self.window, self.hop, window=self.hann, return_complex=True)  # (B, F, T_s)
            x = torch.stack([spec.real, spec.imag], dim=1)  # (B, 2, F, T_s)
            features = []
            for layer in self.layers:
                x = F.leaky_relu(layer(x), 0.2)
                features.append(x)
            return DiscriminatorOutput([self.head(x)], [features])


class Discriminators(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.wave = MultiScaleWaveDiscriminator(config)
        self.stft = STFTDiscriminator(config)

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        wave, stft = self.wave(wav), self.stft(wav)
        return DiscriminatorOutput(wave.logits + stft.logits, wave.features + stft.features)
