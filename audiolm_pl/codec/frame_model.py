"""A frame-domain codec: every layer runs at the token frame rate, the waveform comes from an inverse STFT.

    wav (B, T) ──STFT──▶ log-magnitudes, S sub-frames per token frame ──ConvNeXt──▶ latents (B, T_a, D)
        ──residual FSQ──▶ codes (B, T_a, Q)
        ──ConvNeXt──▶ magnitude + phase of S sub-frames per token frame ──inverse STFT──▶ wav (B, T)

SoundStream's last decoder layers run at the audio rate, so most of its cost goes into samples;
here the ConvNeXt blocks (as in Vocos, WavTokenizer, X-Codec 2) run at 50 Hz and the inverse STFT
does the upsampling for free, so a CPU trains on several times more audio per minute. Each token
frame carries S short STFT frames (hop = frame hop / S), which keeps the time resolution of a
20 ms analysis instead of the 80 ms window a single STFT frame per token would need.
Not causal: every block sees `kernel_size // 2` frames either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from audiolm_pl.codec.base import QuantizedCodec
from audiolm_pl.codec.fsq import FactorisedResidualFSQ, FSQConfig
from audiolm_pl.codec.spectral import stft_magnitude

MAX_LOG_MAGNITUDE = 6.0


@dataclass
class FrameCodecConfig:
    kind: str = "frame"  # the codec registry key (audiolm_pl/registry.py CODECS)
    sample_rate: int = 16000
    hop_length: int = 320  # audio samples per token frame: 16 kHz / 320 = 50 Hz
    subframes: int = 4  # STFT frames per token frame (STFT hop = hop_length / subframes)
    n_fft: int = 320  # STFT size on both sides (window = n_fft, Hann)
    dim: int = 384  # width of the ConvNeXt blocks
    intermediate_dim: int = 1152  # their inner width
    encoder_blocks: int = 4
    decoder_blocks: int = 8
    kernel_size: int = 7
    latent_dim: int = 128  # D, what the quantizer sees
    quantizer: FSQConfig = field(default_factory=FSQConfig)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over time -> LayerNorm -> pointwise MLP, scaled residual (Vocos' block)."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, intermediate_dim), nn.GELU(), nn.Linear(intermediate_dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim) -> (B, T, dim)"""
        h = self.depthwise(x.transpose(1, 2)).transpose(1, 2)  # (B, T, dim)
        return x + self.gamma * self.mlp(self.norm(h))


class ConvNeXtStack(nn.Module):
    """in_dim -> dim -> `blocks` ConvNeXt blocks -> LayerNorm -> out_dim, all at the frame rate."""

    def __init__(self, in_dim: int, out_dim: int, config: FrameCodecConfig, blocks: int):
        super().__init__()
        self.embed = nn.Conv1d(in_dim, config.dim, config.kernel_size, padding=config.kernel_size // 2)
        self.norm_in = nn.LayerNorm(config.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, config.kernel_size, 1 / max(1, blocks))
            for _ in range(blocks)
        )
        self.norm_out = nn.LayerNorm(config.dim, eps=1e-6)
        self.out = nn.Linear(config.dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, in_dim) -> (B, T, out_dim)"""
        h = self.norm_in(self.embed(x.transpose(1, 2)).transpose(1, 2))  # (B, T, dim)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm_out(h))


class FrameCodec(QuantizedCodec):
    def __init__(self, config: FrameCodecConfig):
        super().__init__()
        if config.hop_length % config.subframes:
            raise ValueError(f"model.hop_length={config.hop_length} must be a multiple of model.subframes={config.subframes}")
        if config.n_fft < 2 * config.hop_length // config.subframes:
            raise ValueError(f"model.n_fft={config.n_fft} must be at least twice the STFT hop "
                             f"({config.hop_length // config.subframes}) for the inverse STFT to overlap-add")
        self.config = config
        self.hop_length = config.hop_length
        self.stft_hop = config.hop_length // config.subframes
        bins = config.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.encoder = ConvNeXtStack(config.subframes * bins, config.latent_dim, config, config.encoder_blocks)
        self.quantizer = FactorisedResidualFSQ(config.latent_dim, config.quantizer)
        self.decoder = ConvNeXtStack(config.latent_dim, config.subframes * bins * 2, config, config.decoder_blocks)

    codebook_size = property(lambda self: self.quantizer.codebook_size)

    # -- waveform <-> frames -------------------------------------------------------------

    def analysis(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_a * hop) -> log-magnitude frames (B, T_a, S * bins)."""
        magnitude = stft_magnitude(wav.float(), self.window, self.stft_hop)  # (B, bins, T_a * S + 1)
        frames = magnitude[:, :, : wav.shape[1] // self.stft_hop]  # (B, bins, T_a * S): centred frames, last one dropped
        logmag = torch.log(frames.clamp_min(1e-5)).transpose(1, 2)  # (B, T_a * S, bins)
        batch, steps, bins = logmag.shape
        return logmag.reshape(batch, steps // self.config.subframes, self.config.subframes * bins)  # (B, T_a, S * bins)

    def synthesis(self, head: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, T_a, S * bins * 2) -> complex STFT -> wav (B, T_a * hop).

        Half of each sub-frame's outputs is a log-magnitude, the other half a phase angle (Vocos)."""
        batch, frames, _ = head.shape
        bins = self.config.n_fft // 2 + 1
        head = head.float().reshape(batch, frames * self.config.subframes, 2, bins)  # (B, T_a * S, 2, bins)
        # a smooth min(log-magnitude, 6) bounds early blow-ups (exp(6) ~ 400) yet keeps a gradient: a hard
        # clamp leaves a decoder that overshot it with none, and training stalls on a constant output
        magnitude = (MAX_LOG_MAGNITUDE - F.softplus(MAX_LOG_MAGNITUDE - head[:, :, 0])).exp()  # (B, T_a * S, bins)
        phase = head[:, :, 1]
        spec = torch.polar(magnitude, phase).transpose(1, 2)  # (B, bins, T_a * S)
        spec = F.pad(spec, (0, 1))  # the dropped last centred frame, as silence
        length = frames * self.hop_length
        return torch.istft(spec, self.config.n_fft, self.stft_hop, window=self.window, length=length)  # (B, T_a * hop)

    # -- the two halves QuantizedCodec chains ------------------------------------------
    def _latents(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.analysis(wav))  # (B, T_a * hop) -> (B, T_a, S * bins) -> (B, T_a, D)

    def _waveform(self, latents: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.decoder(latents))  # (B, T_a, D) -> (B, T_a, S * bins * 2) -> (B, T_a * hop)
