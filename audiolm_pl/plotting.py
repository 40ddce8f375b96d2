"""Waveform and log-mel spectrogram pictures (matplotlib, headless) for CLI outputs and TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # not pyplot: no global backend or figure state, fine headless


def spectrogram_figure(wav, sample_rate: int, title: str = "", prompt_seconds: float | None = None):
    """A two-row figure: waveform above, log-magnitude spectrogram below (the prompt marked)."""
    wav = np.asarray(torch.as_tensor(wav, dtype=torch.float32).flatten().cpu())
    n_fft, hop = 1024, 256
    spec = torch.stft(torch.from_numpy(wav), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp_min(1e-5)).numpy()  # (F, frames)
    figure = Figure(figsize=(10, 5))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    seconds = len(wav) / sample_rate
    top.plot(np.arange(len(wav)) / sample_rate, wav, linewidth=0.4)
    top.set_ylabel("amplitude")
    top.set_title(title)
    bottom.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                  extent=[0, seconds, 0, sample_rate / 2000])
    bottom.set_ylabel("kHz")
    bottom.set_xlabel("seconds")
    if prompt_seconds:
        for axis in (top, bottom):
            axis.axvline(prompt_seconds, color="cyan", linestyle="--", linewidth=1)
    figure.tight_layout()
    return figure


def save_spectrogram_png(wav, sample_rate: int, path: str | Path, title: str = "", prompt_seconds: float | None = None) -> Path:
    from audiolm_pl.fileio import atomic_output

    path = Path(path)
    figure = spectrogram_figure(wav, sample_rate, title, prompt_seconds)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    return path
