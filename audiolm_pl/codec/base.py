"""What SoundStream and the frame codec share: an encoder to latents at the frame rate, a quantizer, a decoder.

    wav (B, T) ──pad to whole frames──▶ _latents ──▶ latents (B, T_a, D) ──quantizer──▶ codes (B, T_a, Q)
    codes ──quantizer.decode──▶ latents (B, T_a, D) ──_waveform──▶ wav (B, T_a * hop)

`QuantizedCodec` implements the `AcousticCodec` contract (encode, decode, the rates, the training pass) once;
a codec class gives its modules, `hop_length`, `codebook_size` and the two halves `_latents` / `_waveform`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from audiolm_pl.tokens import AcousticCodec


@dataclass
class CodecOutput:
    wav: torch.Tensor  # (B, T) reconstruction
    codes: torch.Tensor  # (B, T_a, Q) int64; -1 on levels dropped by quantizer dropout
    commitment_loss: torch.Tensor  # () mean over the levels used


class QuantizedCodec(AcousticCodec):
    """Subclasses set `config` (with `sample_rate` and `quantizer.num_quantizers`), `hop_length` (audio samples
    per frame) and `quantizer` (forward(latents, num_quantizers) -> QuantizerOutput, encode, decode)."""

    hop_length: int

    sample_rate = property(lambda self: self.config.sample_rate)
    frame_rate = property(lambda self: self.config.sample_rate / self.hop_length)
    num_quantizers = property(lambda self: self.config.quantizer.num_quantizers)

    @abc.abstractmethod
    def _latents(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T_a * hop) -> unquantized latents (B, T_a, D)."""

    @abc.abstractmethod
    def _waveform(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T_a, D), quantized or not -> wav (B, T_a * hop)."""

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"expected wav of shape (B, T), got {tuple(wav.shape)}")
        return F.pad(wav, (0, -wav.shape[1] % self.hop_length))  # (B, T_a * hop): whole frames

    def forward(self, wav: torch.Tensor, num_quantizers: int | None = None) -> CodecOutput:
        """Training/eval pass: wav (B, T) -> reconstruction (B, T) via (possibly dropped-out) codes."""
        length = wav.shape[1]
        quantized = self.quantizer(self._latents(self._pad(wav)), num_quantizers)  # latents (B, T_a, D)
        wav_out = self._waveform(quantized.latents)[:, :length]  # (B, T)
        return CodecOutput(wav_out, quantized.codes, quantized.commitment_loss)

    @torch.no_grad()
    def encode_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, T) -> unquantized latents (B, ceil(T / hop), D)."""
        return self._latents(self._pad(wav))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, T_a, D), quantized or not -> wav (B, T_a * hop)."""
        return self._waveform(latents)

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
