"""Music measures for piano continuations: does the continuation keep the prompt's tempo and pitch content?

Simple, documented extractors on an STFT (no learnt model, nothing downloaded):
- `onset_rate`: onsets per second from a spectral-flux novelty curve (log-compressed magnitudes, positive
  differences summed over bins), peaks above a local median plus a share of the curve's range, at least
  `MIN_ONSET_GAP_SECONDS` apart. Soft notes right after a much louder one can be missed. A 4 Hz click train gives ~4/s; a held tone ~0.
- `pitch_class_histogram`: the magnitude of every STFT bin between 55 Hz and 4 kHz added to the pitch class of
  its frequency (equal temperament, A4 = 440 Hz), normalised to sum 1. A C-major chord peaks at C, E and G.
- `pitch_centroid`: the magnitude-weighted mean MIDI pitch over the same bins: the register the music sits in.

`compare_clips(prompt, clip)` puts a continuation beside its prompt: the ratio of onset rates (1 = same note
density), the L1 distance of pitch-class histograms (0 = same pitch classes, 2 = disjoint) and the shift of
the pitch centroid in semitones. `evaluate_music` (music_eval.py) applies it to generated and real continuations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHROMA_RANGE_HZ = (55.0, 4000.0)  # A1 .. ~B7: piano fundamentals and their first partials
MIN_ONSET_GAP_SECONDS = 0.05
ONSET_HOP_SECONDS = 0.01
SILENCE_RMS = 1e-4  # below this a clip has no music to measure
ONSET_DELTA = 0.2  # an onset rises this share of the novelty's range above the local median
MIN_FLUX = 1.0  # summed log-flux below this is no onset: a held tone's frame-to-frame wobble stays under 0.2


@dataclass
class MusicMeasures:
    onset_rate: float  # onsets per second
    pitch_classes: list[float]  # 12 shares, C first, summing to 1 (all 0 for silence)
    pitch_centroid: float  # magnitude-weighted mean MIDI pitch (NaN for silence)


@dataclass
class ClipComparison:
    """A continuation measured against its own prompt."""

    onset_rate_ratio: float  # continuation onsets/s / prompt onsets/s (NaN when the prompt has none)
    pitch_class_l1: float  # L1 distance of the pitch-class histograms, in [0, 2]
    pitch_shift_semitones: float  # continuation's pitch centroid - prompt's


def _magnitudes(wav: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(T,) -> (N, n_fft // 2 + 1) magnitude spectra of Hann-windowed frames (zero-padded to one frame)."""
    wav = np.pad(np.asarray(wav, dtype=np.float64), (0, max(0, n_fft - len(wav))))
    count = 1 + (len(wav) - n_fft) // hop
    frames = wav[np.arange(n_fft)[None] + hop * np.arange(count)[:, None]]  # (N, n_fft)
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))  # (N, F)


def onset_novelty(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) -> (N - 1,) spectral flux every `ONSET_HOP_SECONDS`: summed positive change of log-compressed magnitudes."""
    hop = round(ONSET_HOP_SECONDS * sample_rate)
    magnitude = _magnitudes(wav, 4 * hop, hop)  # (N, F), 40 ms frames
    # log compression (gamma 100, relative to the loudest bin) so a soft note's attack counts, not only loud ones
    compressed = np.log1p(100 * magnitude / (magnitude.max() + 1e-12))  # (N, F)
    return np.maximum(np.diff(compressed, axis=0), 0).sum(axis=1)  # (N - 1,)


def onset_times(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) -> onset times in seconds: local maxima of the novelty (within +-`MIN_ONSET_GAP_SECONDS`) that rise
    above its 0.5 s moving median by `ONSET_DELTA` x the curve's range, and above `MIN_FLUX`.

    Medians, not means: a noise floor makes the flux fluctuate around a level that a few onsets would pull a mean
    away from. The clip is taken to start from silence, so a note sounding at 0 s is an onset; to count the onsets
    of a continuation, detect on prompt + continuation and split the times (`continuation_onset_rates`)."""
    if np.sqrt(np.mean(np.square(wav))) < SILENCE_RMS:
        return np.zeros(0)
    lead = 4 * round(ONSET_HOP_SECONDS * sample_rate)  # one frame of silence before the clip
    novelty = onset_novelty(np.pad(np.asarray(wav, dtype=np.float64), (lead, 0)), sample_rate)  # (N - 1,)
    half = round(0.25 / ONSET_HOP_SECONDS)
    typical = np.median(novelty)
    # padded with the typical level: an onset at either end must not raise its own local median
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(novelty, half, constant_values=typical), 2 * half + 1)
    threshold = np.median(windows, axis=1) + ONSET_DELTA * (novelty.max() - typical)  # (N - 1,)
    gap = round(MIN_ONSET_GAP_SECONDS / ONSET_HOP_SECONDS)
    padded = np.pad(novelty, gap, constant_values=-np.inf)
    neighbourhood = np.lib.stride_tricks.sliding_window_view(padded, 2 * gap + 1).max(axis=1)  # (N - 1,)
    peaks = np.flatnonzero((novelty >= neighbourhood) & (novelty > np.maximum(threshold, MIN_FLUX)))
    kept = [peak for index, peak in enumerate(peaks) if index == 0 or peak - peaks[index - 1] > gap]  # equal maxima once
    # novelty[i] is the change into frame i + 1; a frame is stamped with its centre (frames are 4 hops long), less the lead
    return np.maximum((np.asarray(kept, dtype=float) + 1 + 2 - 4) * ONSET_HOP_SECONDS, 0.0)


def onset_rate(wav: np.ndarray, sample_rate: int) -> float:
    return len(onset_times(wav, sample_rate)) / max(len(wav) / sample_rate, 1e-6)


def continuation_onset_rates(wav: np.ndarray, prompt_samples: int, sample_rate: int) -> tuple[float, float]:
    """prompt + continuation (T,) -> (onsets/s of the prompt, onsets/s of the continuation), detected on the whole, so
    a note held over the boundary is not counted again where the continuation starts."""
    times = onset_times(wav, sample_rate)
    boundary = prompt_samples / sample_rate
    rest = max((len(wav) - prompt_samples) / sample_rate, 1e-6)
    in_continuation = times >= boundary - ONSET_HOP_SECONDS  # times are frame-stamped: a note on the cut may read 10 ms early
    return float((~in_continuation).sum() / boundary), float(in_continuation.sum() / rest)


def _bin_pitches(n_fft: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The STFT bins inside `CHROMA_RANGE_HZ` and their MIDI pitch (fractional)."""
    frequencies = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    low, high = CHROMA_RANGE_HZ
    bins = np.flatnonzero((frequencies >= low) & (frequencies <= high))
    return bins, 69 + 12 * np.log2(frequencies[bins] / 440.0)


def _pitch_spectrum(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(T,) -> (magnitude summed over frames per in-range bin, MIDI pitch of each bin). 256 ms frames: ~4 Hz bins,
    a semitone apart from 55 Hz up."""
    n_fft = 2 ** round(np.log2(0.256 * sample_rate))
    bins, pitches = _bin_pitches(n_fft, sample_rate)
    return _magnitudes(wav, n_fft, n_fft // 4)[:, bins].sum(axis=0), pitches  # (F',), (F',)


def pitch_class_histogram(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(T,) -> (12,) shares of magnitude per pitch class (C = 0), summing to 1; zeros for silence."""
    weight, pitches = _pitch_spectrum(wav, sample_rate)
    histogram = np.bincount(np.round(pitches).astype(int) % 12, weights=weight, minlength=12)  # (12,)
    total = histogram.sum()
    return histogram / total if total > 0 else histogram


def pitch_centroid(wav: np.ndarray, sample_rate: int) -> float:
    weight, pitches = _pitch_spectrum(wav, sample_rate)
    return float(weight @ pitches / weight.sum()) if weight.sum() > 0 else float("nan")


def music_measures(wav: np.ndarray, sample_rate: int) -> MusicMeasures:
    if np.sqrt(np.mean(np.square(wav))) < SILENCE_RMS:
        return MusicMeasures(0.0, [0.0] * 12, float("nan"))
    return MusicMeasures(onset_rate(wav, sample_rate), pitch_class_histogram(wav, sample_rate).tolist(),
                         pitch_centroid(wav, sample_rate))


def compare_measures(prompt: MusicMeasures, clip: MusicMeasures) -> ClipComparison:
    ratio = clip.onset_rate / prompt.onset_rate if prompt.onset_rate > 0 else float("nan")
    distance = float(np.abs(np.asarray(clip.pitch_classes) - np.asarray(prompt.pitch_classes)).sum())
    return ClipComparison(ratio, distance, clip.pitch_centroid - prompt.pitch_centroid)


def compare_clips(prompt: np.ndarray, clip: np.ndarray, sample_rate: int) -> ClipComparison:
    """prompt (T_p,), continuation (T_c,) at `sample_rate` -> `ClipComparison` (onsets detected on the two joined)."""
    prompt_measures, clip_measures = music_measures(prompt, sample_rate), music_measures(clip, sample_rate)
    if prompt_measures.onset_rate > 0 or clip_measures.onset_rate > 0:  # not silence: onsets of the joined clips
        prompt_measures.onset_rate, clip_measures.onset_rate = continuation_onset_rates(
            np.concatenate([prompt, clip]), len(prompt), sample_rate)
    return compare_measures(prompt_measures, clip_measures)
