"""Codec losses: multi-scale mel reconstruction, multi-resolution STFT (magnitude and complex), hinge
adversarial losses, feature matching."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.audio_utils import mel_filter_bank

from audiolm_pl.codec.discriminators import DiscriminatorOutput
from audiolm_pl.codec.spectral import stft_magnitude


class MultiScaleMelLoss(nn.Module):
    """Mean over STFT sizes 64..2048 of L1 distances between log-mel spectrograms (and mel
    magnitudes), as in SoundStream's reconstruction loss. Also the `mel distance` metric."""

    def __init__(self, sample_rate: int, window_sizes=(64, 128, 256, 512, 1024, 2048), log_weight: float = 1.0):
        super().__init__()
        self.window_sizes = tuple(window_sizes)
        self.log_weight = log_weight
        for size in self.window_sizes:
            n_mels = min(80, size // 4)
            filters = mel_filter_bank(num_frequency_bins=size // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                                      max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
            self.register_buffer(f"mel_{size}", torch.from_numpy(filters).float().T, persistent=False)  # (n_mels, F)
            self.register_buffer(f"hann_{size}", torch.hann_window(size), persistent=False)

    def mel(self, wav: torch.Tensor, size: int) -> torch.Tensor:
        magnitude = stft_magnitude(wav.float(), getattr(self, f"hann_{size}"), size // 4)  # (B, F, T_s)
        return getattr(self, f"mel_{size}") @ magnitude  # (B, n_mels, T_s)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(predicted.device.type, enabled=False):
            total = predicted.new_zeros((), dtype=torch.float32)
            for size in self.window_sizes:
                mel_p, mel_t = self.mel(predicted, size), self.mel(target, size)
                total = total + F.l1_loss(mel_p, mel_t)
                total = total + self.log_weight * F.l1_loss(mel_p.clamp_min(1e-5).log10(), mel_t.clamp_min(1e-5).log10())
            return total / len(self.window_sizes)


@dataclass
class STFTLosses:
    magnitude: torch.Tensor  # () log-magnitude L1 + spectral convergence, mean over resolutions
    complex: torch.Tensor  # () L1 between power-law compressed complex spectra, mean over resolutions


class MultiResolutionSTFTLoss(nn.Module):
    """Distances between STFTs at several window sizes (hop = window / 4).

    `magnitude` ignores phase (Parallel WaveGAN's log-magnitude + spectral convergence). `complex`
    compares |X|^0.3 e^{i angle X}: a decoder that predicts phase (the frame codec) is told when its
    overlapping frames disagree, which magnitudes alone leave free; the 0.3 power keeps quiet bins
    from vanishing next to loud ones (as compressed-spectrum losses in speech enhancement do)."""

    def __init__(self, window_sizes=(320, 640, 1280), compression: float = 0.3):
        super().__init__()
        self.window_sizes, self.compression = tuple(window_sizes), compression
        for size in self.window_sizes:
            self.register_buffer(f"hann_{size}", torch.hann_window(size), persistent=False)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> STFTLosses:
        """predicted, target (B, T) -> STFTLosses"""
        magnitude = complex_ = predicted.new_zeros((), dtype=torch.float32)
        with torch.autocast(predicted.device.type, enabled=False):
            for size in self.window_sizes:
                window = getattr(self, f"hann_{size}")
                spec_p = torch.stft(predicted.float(), size, size // 4, window=window, return_complex=True)  # (B, F, T_s)
                spec_t = torch.stft(target.float(), size, size // 4, window=window, return_complex=True)
                mag_p, mag_t = spec_p.abs().clamp_min(1e-5), spec_t.abs().clamp_min(1e-5)
                convergence = torch.linalg.vector_norm(mag_p - mag_t) / torch.linalg.vector_norm(mag_t)
                magnitude = magnitude + F.l1_loss(mag_p.log(), mag_t.log()) + convergence
                shrink = self.compression - 1
                complex_ = complex_ + (spec_p * mag_p.pow(shrink) - spec_t * mag_t.pow(shrink)).abs().mean()
        return STFTLosses(magnitude / len(self.window_sizes), complex_ / len(self.window_sizes))


def discriminator_hinge_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    losses = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real.logits, fake.logits)]
    return torch.stack(losses).mean()


def generator_hinge_loss(fake: DiscriminatorOutput) -> torch.Tensor:
    return torch.stack([F.relu(1 - f).mean() for f in fake.logits]).mean()


def feature_matching_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> torch.Tensor:
    """L1 between feature maps, each relative to the real map's mean magnitude (scale-free)."""
    losses = [
        (f - r.detach()).abs().mean() / (r.detach().abs().mean() + 1e-5)
        for real_maps, fake_maps in zip(real.features, fake.features)
        for r, f in zip(real_maps, fake_maps)
    ]
    return torch.stack(losses).mean()
