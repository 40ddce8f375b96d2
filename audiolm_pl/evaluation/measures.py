"""Signal figures: is it speech rather than a tone (`speech_measures`), how good does it sound
(`DNSMOSJudge`), how close is a codec round trip to its source (`roundtrip_quality`).

`speech_measures` works on 40 ms frames every 10 ms (frames within 40 dB of the loudest count as
active; the figures are over active frames):
- spectral_change_db: RMS difference (dB) between the level-normalised 40-band log-mel spectra
  of frames 50 ms apart. Speech moves its formants: 11-15 dB for espeak-ng speech; a tone or a
  stationary buzz stays near 0, even when its loudness or pitch wobbles (2-6 dB); white noise ~3.
- voiced_fraction: active frames whose normalised autocorrelation peaks above 0.5 at a pitch lag
  of 60-400 Hz. Speech alternates voiced and unvoiced sounds (0.6-0.8 for espeak-ng); a tone or a
  buzz is voiced on every frame (1.0); noise on none (0.0).
- spectral_flatness: geometric / arithmetic mean of the power spectrum: ~0 for a tone or a buzz,
  ~0.56 for white noise, ~0.02 for speech.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from audiolm_pl.evaluation.asr import JUDGE_RATE, to_judge_rate
from audiolm_pl.evaluation.packages import import_judge_package

ACTIVE_RANGE_DB = 40.0
CHANGE_GAP_SECONDS = 0.05


@dataclass
class SpeechMeasures:
    spectral_change_db: float
    voiced_fraction: float
    spectral_flatness: float


def _frames(wav: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(T,) -> (N, size) overlapping frames (zero-padded to at least one frame)."""
    wav = np.pad(wav, (0, max(0, size - len(wav))))
    count = 1 + (len(wav) - size) // hop
    return wav[np.arange(size)[None] + hop * np.arange(count)[:, None]]  # (N, size)


def speech_measures(wav: np.ndarray, sample_rate: int) -> SpeechMeasures:
    from transformers.audio_utils import mel_filter_bank

    wav = to_judge_rate(wav, sample_rate).astype(np.float64)
    size, hop = int(0.04 * JUDGE_RATE), int(0.01 * JUDGE_RATE)
    frames = _frames(wav, size, hop)  # (N, 640)
    power = np.abs(np.fft.rfft(frames * np.hanning(size), axis=1)) ** 2 + 1e-12  # (N, F)
    level_db = 10 * np.log10(power.mean(1))  # (N,)
    active = level_db > level_db.max() - ACTIVE_RANGE_DB  # (N,)

    mel = power @ mel_filter_bank(num_frequency_bins=size // 2 + 1, num_mel_filters=40, min_frequency=50.0,
                                  max_frequency=JUDGE_RATE / 2, sampling_rate=JUDGE_RATE, norm="slaney",
                                  mel_scale="slaney")  # (N, 40)
    shape_db = 10 * np.log10(mel + 1e-12)
    shape_db -= shape_db.mean(1, keepdims=True)  # the spectrum's shape, not its level
    gap = round(CHANGE_GAP_SECONDS * JUDGE_RATE / hop)
    both = active[gap:] & active[:-gap]  # (N - gap,)
    change = np.sqrt(np.mean((shape_db[gap:] - shape_db[:-gap]) ** 2, axis=1))  # (N - gap,)

    centred = frames - frames.mean(1, keepdims=True)
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(centred, n=2 * size, axis=1)) ** 2, axis=1)[:, :size]  # (N, size)
    autocorrelation /= autocorrelation[:, :1] + 1e-12
    voiced = autocorrelation[:, JUDGE_RATE // 400 : JUDGE_RATE // 60].max(1) > 0.5  # (N,)

    flatness = np.exp(np.log(power).mean(1)) / power.mean(1)  # (N,)
    return SpeechMeasures(float(change[both].mean()) if both.any() else 0.0, float(voiced[active].mean()),
                          float(flatness[active].mean()))


class DNSMOSJudge:
    """DNSMOS P.835 (sig, bak, ovrl) and P.808 from speechmos's bundled ONNX models.

    Clips shorter than the model's 9.01 s input are repeated cyclically up to it (speechmos
    doubles them and scores every 1 s hop of the doubled clip, several times slower for the
    same clip); longer clips are scored on 1 s hops as speechmos does.
    """

    name = "DNSMOS (speechmos)"

    def __init__(self):
        dnsmos = import_judge_package("speechmos.dnsmos", "DNSMOS")
        models = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        self.model = dnsmos.DNSMOS(os.path.join(models, "sig_bak_ovr.onnx"), os.path.join(models, "model_v8.onnx"))
        self.input_samples = int(dnsmos.INPUT_LENGTH * JUDGE_RATE)

    def __call__(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
        wav = to_judge_rate(wav, sample_rate)
        if len(wav) < self.input_samples:
            wav = np.resize(wav, self.input_samples)  # cyclic repetition
        scores = self.model(wav, JUDGE_RATE, False)
        return {"sig": float(scores["sig_mos"]), "bak": float(scores["bak_mos"]), "ovrl": float(scores["ovrl_mos"]),
                "p808": float(scores["p808_mos"])}


class RoundTripQuality:
    """STOI, wide-band PESQ (codec/metrics.py), mel distance and SI-SDR of a reconstruction."""

    def __init__(self, sample_rate: int):
        from audiolm_pl.codec.losses import MultiScaleMelLoss

        import_judge_package("pystoi", "STOI")
        import_judge_package("pesq", "PESQ")
        self.sample_rate = sample_rate
        self.mel_distance = MultiScaleMelLoss(sample_rate)

    @torch.no_grad()
    def __call__(self, reconstruction: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
        """reconstruction (T,), original (T,) at `sample_rate` -> {"stoi", "pesq" (if it can be computed), ...}."""
        from audiolm_pl.codec.metrics import optional_perceptual_metrics, si_sdr

        predicted, target = reconstruction.float().cpu()[None], original.float().cpu()[None]  # (1, T)
        figures = optional_perceptual_metrics(predicted, target, self.sample_rate)
        figures["mel_distance"] = float(self.mel_distance(predicted, target))
        figures["si_sdr"] = float(si_sdr(predicted, target))
        return figures
