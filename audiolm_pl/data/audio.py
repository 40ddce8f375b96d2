"""Reading audio files for the shard writer: decode, validate, mix to mono, resample.

Every failure is a `BadAudio` whose message says what is wrong with which file, so a long
job can skip the file, list it in its report, and go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".w64", ".caf")


class BadAudio(ValueError):
    """An input that cannot become a training sample; the message names the file and why."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int
    damage: str = ""  # what libsndfile corrected in the header (a truncated file), "" when the file is whole

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def probe(path: Path) -> AudioInfo:
    """Header only (fast): rate, length and channels, or `BadAudio`."""
    if path.stat().st_size == 0:
        raise BadAudio(f"{path}: empty file (0 bytes)")
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # soundfile.LibsndfileError, RuntimeError on odd containers
        raise BadAudio(f"{path}: not audio soundfile can read ({_short(err)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise BadAudio(f"{path}: zero-length audio ({info.frames} frames at {info.samplerate} Hz)")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels), _header_damage(info))


def _header_damage(info) -> str:
    """libsndfile reads a truncated file (or one whose header claims more data than it holds) up to its real end
    and logs the header's claim as `data : 64000 (should be 31978)`: that line, in words, or ""."""
    claim = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info, re.MULTILINE)
    if claim:
        claimed, held = int(claim.group(1)), int(claim.group(2))
        if held < claimed:
            return (f"truncated: its header promises {claimed} bytes of audio but the file holds {held}; "
                    f"kept the {info.frames / info.samplerate:.2f} s that are there")
    return ""


def load_mono(path: Path, target_rate: int) -> np.ndarray:
    """Decode `path` -> float32 (T,) mono at `target_rate` (channels averaged, soxr 'HQ')."""
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as err:
        raise BadAudio(f"{path}: cannot decode ({_short(err)})") from None
    if audio.shape[0] == 0:
        raise BadAudio(f"{path}: zero-length audio (0 samples decoded)")
    if not np.all(np.isfinite(audio)):
        raise BadAudio(f"{path}: contains NaN or infinite samples")
    mono = audio.mean(axis=1)  # (T,)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    peak = float(np.abs(mono).max())
    if peak > 1.0:  # resampling overshoot of a full-scale file: scale rather than clip
        mono = mono / peak
    return mono


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
