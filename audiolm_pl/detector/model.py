"""The detector's network: log-mel frames -> a few 2-D conv blocks -> masked mean over time -> one logit.

    wav (B, T) -> log-mel (B, 1, n_mels, F) -> blocks (B, C, n_mels / 2^k, F / 2^k) -> pooled (B, C) -> logit (B,)

A positive logit says "made by our pipeline" (codec resynthesis or generation). Padding past a clip's end is
left out of the pooling, so a short clip's zero tail is no cue (real and synthetic clips are padded alike, but a
detector asked about a short file should judge the audio, not the silence added to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from audiolm_pl.semantic.features import mel_filterbank


@dataclass
class DetectorConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160  # 100 frames per second at 16 kHz
    n_mels: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # one conv block (conv, BN, GELU, 2x2 pool) each
    dropout: float = 0.1

    def __post_init__(self):
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"model.channels must list positive channel counts, one per conv block; got {self.channels}")
        if self.n_mels < 2 ** len(self.channels):
            raise ValueError(f"model.n_mels={self.n_mels} is halved by each of the {len(self.channels)} conv blocks; "
                             f"use at least {2 ** len(self.channels)} mel bands or fewer blocks")
        if self.hop_length < 1 or self.n_fft < self.hop_length:
            raise ValueError(f"model.n_fft={self.n_fft} must be >= model.hop_length={self.hop_length} >= 1")


class LogMel(nn.Module):
    """wav (B, T) -> log-mel (B, n_mels, F), F = T // hop + 1 (centred STFT)."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.n_fft, self.hop = config.n_fft, config.hop_length
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(config.n_mels, config.n_fft, config.sample_rate), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True)  # (B, n_fft/2+1, F)
        return torch.log(self.filters @ spec.abs().pow(2) + 1e-6)  # (B, n_mels, F)


class MelCNNDetector(nn.Module):
    """Real vs synthetic audio: `forward(wav, mask)` -> logits (B,); `probability(wav)` -> P(synthetic) (B,)."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.log_mel = LogMel(config)
        # per-band normalisation learnt from the data: recordings differ in level far more than codecs do
        self.input_norm = nn.BatchNorm2d(1)
        blocks, channels_in = [], 1
        for channels in config.channels:
            blocks += [nn.Conv2d(channels_in, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.GELU(),
                       nn.MaxPool2d(2)]
            channels_in = channels
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(channels_in, 1)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def forward(self, wav: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wav (B, T), mask (B, T) bool (True on audio, False on padding; None: all audio) -> logits (B,)."""
        features = self.input_norm(self.log_mel(wav)[:, None])  # (B, 1, n_mels, F)
        hidden = self.blocks(features)  # (B, C, n_mels / 2^k, F / 2^k)
        hidden = hidden.mean(dim=2)  # (B, C, F'): frequency pooled
        weights = self._frame_weights(mask, wav.shape[1], hidden.shape[-1], hidden.dtype, wav.device)  # (B, 1, F')
        pooled = (hidden * weights).sum(-1) / weights.sum(-1).clamp_min(1e-6)  # (B, C)
        return self.head(self.dropout(pooled)).squeeze(-1)  # (B,)

    @staticmethod
    def _frame_weights(mask, samples: int, frames: int, dtype, device) -> torch.Tensor:
        """(B, 1, frames) 1 where a pooled frame covers audio, 0 where it covers only padding."""
        if mask is None:
            return torch.ones(1, 1, frames, dtype=dtype, device=device)
        audio_fraction = mask.sum(-1, keepdim=True).to(dtype) / samples  # (B, 1)
        position = (torch.arange(frames, device=device, dtype=dtype) + 0.5) / frames  # (frames,) frame centres
        return (position < audio_fraction.clamp_min(1.0 / frames)).to(dtype)[:, None]  # (B, 1, frames)

    @torch.inference_mode()
    def probability(self, wav: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wav (B, T) at `sample_rate` -> P(synthetic) (B,) in [0, 1]."""
        return torch.sigmoid(self(wav, mask))
