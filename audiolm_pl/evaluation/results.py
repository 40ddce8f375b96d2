"""What `evaluate_pipeline` returns: one dataclass per section, the target table, plain-JSON `to_dict`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from audiolm_pl.evaluation.detection import DetectorSection
from audiolm_pl.evaluation.text import ErrorRates

CODEC_STOI_TARGET = 0.85
CODEC_WER_RATIO_TARGET = 1.5
ACOUSTIC_CER_TARGET = 0.30
SPEAKER_MATCH_TARGET = 0.90
SPECTRAL_CHANGE_TARGET = 0.5  # generated continuations' spectral change >= half the real ones'
VOICED_FRACTION_RANGE = (0.2, 0.95)  # a tone or a buzz is voiced on every frame, noise on none


@dataclass
class CodecSection:
    """Codec round trip (encode -> decode, all quantizers) of every evaluated utterance, full length."""

    num_quantizers: int
    means: dict[str, float]  # stoi, pesq, mel_distance, si_sdr: mean over utterances; wer_{original,roundtrip}_<judge>: pooled
    group_means: dict[str, dict[str, float]]  # speaker group -> the same figures
    asr: dict[str, dict[str, Optional[ErrorRates]]]  # judge -> {"original", "roundtrip"}: pooled WER/CER
    wer_ratio: dict[str, Optional[float]]  # judge -> pooled WER of round trips / pooled WER of originals
    utterances: list[dict]
    bitrates: dict[int, dict[str, float]] = field(default_factory=dict)  # levels -> kbps, mel_distance, si_sdr


@dataclass
class AcousticSection:
    """Semantic ids of an utterance -> new acoustic tokens -> audio, judged against the utterance's text."""

    asr: dict[str, dict[str, Optional[ErrorRates]]]  # judge -> {"generated", "original"}
    utterances: list[dict]
    skipped: str = ""  # why nothing was judged


@dataclass
class ContinuationSide:
    """Means over the generated (or the real) continuations of the evaluated prompts."""

    seconds: float  # mean length judged
    speaker_accuracy: float  # speaker identification among the evaluated speakers
    speaker_cosine: float  # mean cosine to the own speaker's enrollment
    spectral_change_db: float
    voiced_fraction: float
    spectral_flatness: float
    words_per_second: Optional[float]  # words the ASR judge transcribes, per second (None: no ASR judge)
    dnsmos: dict[str, float] = field(default_factory=dict)  # sig, bak, ovrl, p808 (when DNSMOS ran)


@dataclass
class ContinuationSection:
    prompts: int
    num_speakers: int
    generated: Optional[ContinuationSide]
    real: Optional[ContinuationSide]  # the rest of the same utterances: the ceiling
    speaker_match_percent: Optional[float]  # 100 x generated / real speaker-ID accuracy
    self_enrolled: list[str]  # speakers with a single utterance, enrolled on its own prompt
    files: list[str]  # prompt + continuation wavs (a spectrogram PNG beside each)
    utterances: list[dict]
    skipped: str = ""


@dataclass
class Target:
    name: str
    figure: Optional[float]
    reference: Optional[float]  # the ceiling / the original audio's figure, where there is one
    requirement: str
    passed: Optional[bool]  # None: could not be measured
    note: str = ""


@dataclass
class EvalReport:
    config: dict
    judges: dict[str, str]  # role -> judge's name
    utterances: list[dict]  # key, speaker, group, seconds, text
    codec: Optional[CodecSection]
    acoustic: Optional[AcousticSection]
    continuation: Optional[ContinuationSection]
    targets: list[Target]
    wall_seconds: dict[str, float]  # per section, and "total"
    acoustic_only: Optional[ContinuationSection] = None  # the same prompts continued by an acoustic-only coarse LM
    detector: Optional[DetectorSection] = None

    def to_dict(self) -> dict:
        """Plain JSON: non-finite numbers (a metric that could not be computed) become None."""
        return finite_json(asdict(self))


def finite_json(value):
    """`value` with every non-finite float (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def _field(rates: Optional[ErrorRates], name: str) -> Optional[float]:
    return None if rates is None else getattr(rates, name)


def _ratio_target(name: str, figure: Optional[float], reference: Optional[float], limit: float) -> Target:
    if figure is None or reference is None:
        return Target(name, figure, reference, f"<= {limit} x original", None, "no utterance with text")
    note = "the judge misses half the words of the original audio: the ratio says little" if reference >= 0.5 else ""
    return Target(name, figure, reference, f"<= {limit} x original", figure <= limit * reference, note)


def target_table(codec: Optional[CodecSection], acoustic: Optional[AcousticSection],
                 continuation: Optional[ContinuationSection]) -> list[Target]:
    """One row per target of the project, in the order of report.md."""
    rows = []
    if codec is not None:
        stoi = codec.means.get("stoi")
        rows.append(Target("codec round trip STOI", stoi, None, f">= {CODEC_STOI_TARGET}",
                           None if stoi is None else stoi >= CODEC_STOI_TARGET))
        for judge, rates in codec.asr.items():
            original, roundtrip = rates["original"], rates["roundtrip"]
            rows.append(_ratio_target(f"codec round trip WER ({judge})", _field(roundtrip, "wer"), _field(original, "wer"),
                                      CODEC_WER_RATIO_TARGET))
    if acoustic is not None and not acoustic.asr:
        rows.append(Target("acoustic generation CER", None, None, f"<= {ACOUSTIC_CER_TARGET:.0%}", None, acoustic.skipped))
    elif acoustic is not None:
        for judge, rates in acoustic.asr.items():
            generated, original = rates["generated"], rates["original"]
            rows.append(Target(f"acoustic generation CER ({judge})", _field(generated, "cer"), _field(original, "cer"),
                               f"<= {ACOUSTIC_CER_TARGET:.0%}", None if generated is None else generated.cer <= ACOUSTIC_CER_TARGET,
                               _acoustic_note(original)))
    if continuation is not None:
        rows += _continuation_targets(continuation)
    return rows


def _acoustic_note(original: Optional[ErrorRates]) -> str:
    if original is not None and original.cer > ACOUSTIC_CER_TARGET:
        return "the judge's CER on the original audio is already above the target"
    return ""


def _continuation_targets(section: ContinuationSection) -> list[Target]:
    generated, real = section.generated, section.real
    if generated is None or real is None:
        return [Target("continuation speaker match", None, None, f">= {SPEAKER_MATCH_TARGET:.0%} of real", None, section.skipped)]
    match = section.speaker_match_percent
    note = "one speaker only: identification is trivial, see the cosines" if section.num_speakers < 2 else ""
    rows = [Target("continuation speaker-ID accuracy", generated.speaker_accuracy, real.speaker_accuracy,
                   f">= {SPEAKER_MATCH_TARGET:.0%} of real", None if match is None else match >= 100 * SPEAKER_MATCH_TARGET,
                   note)]
    low, high = VOICED_FRACTION_RANGE
    speech_like = (generated.spectral_change_db >= SPECTRAL_CHANGE_TARGET * real.spectral_change_db
                   and low <= generated.voiced_fraction <= high)
    rows.append(Target("continuation is speech-like (not a tone, buzz or noise): spectral change (dB)", generated.spectral_change_db,
                       real.spectral_change_db, f">= {SPECTRAL_CHANGE_TARGET:.0%} of real, and voiced fraction in "
                       f"[{low}, {high}]", speech_like, f"voiced fraction {generated.voiced_fraction:.2f} "
                       f"(real {real.voiced_fraction:.2f})"))
    rows.append(Target("continuation words per second (ASR)", generated.words_per_second, real.words_per_second,
                       "reported", None, "evidence, no threshold"))
    if generated.dnsmos:
        rows.append(Target("continuation DNSMOS overall", generated.dnsmos["ovrl"], real.dnsmos["ovrl"], "reported", None,
                           "evidence, no threshold"))
    return rows
