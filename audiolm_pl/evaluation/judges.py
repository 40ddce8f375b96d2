"""The judges of one evaluation, loaded once, and the transcripts of original audio they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from audiolm_pl.evaluation.asr import ASRJudge, load_asr
from audiolm_pl.evaluation.measures import DNSMOSJudge, RoundTripQuality
from audiolm_pl.evaluation.speaker import SpeakerJudge, load_speaker_judge
from audiolm_pl.semantic.corpus import Utterance


@dataclass
class Judges:
    asr: dict[str, ASRJudge]  # spec ("whisper", "sphinx", "hf:DIR") -> recogniser
    speaker: Optional[SpeakerJudge]
    dnsmos: Optional[DNSMOSJudge]
    quality: RoundTripQuality
    original_transcripts: dict[str, dict[str, str]] = field(default_factory=dict)  # judge -> key -> text

    @property
    def words_judge(self) -> Optional[str]:
        """The recogniser that counts words per second of continuations: Whisper when it is loaded."""
        return next((spec for spec in self.asr if spec.startswith("whisper")), next(iter(self.asr), None))

    def names(self) -> dict[str, str]:
        names = {f"asr {spec}": judge.name for spec, judge in self.asr.items()}
        names["speaker"] = self.speaker.name if self.speaker else "none"
        names["quality"] = "DNSMOS (speechmos)" if self.dnsmos else "none"
        names["words per second"] = self.words_judge or "none"
        return names

    def transcribe_original(self, spec: str, utterance: Utterance) -> str:
        """The judge's transcript of an evaluated utterance, computed once for every section."""
        cache = self.original_transcripts.setdefault(spec, {})
        if utterance.key not in cache:
            cache[utterance.key] = self.asr[spec].transcribe(utterance.wav, utterance.sample_rate)
        return cache[utterance.key]

    def words_per_second(self, wav: np.ndarray, sample_rate: int) -> tuple[Optional[float], str]:
        from audiolm_pl.evaluation.text import normalize_text

        if self.words_judge is None:
            return None, ""
        text = self.asr[self.words_judge].transcribe(wav, sample_rate)
        return len(normalize_text(text).split()) / max(len(wav) / sample_rate, 1e-6), text


def load_judges(config, sample_rate: int) -> Judges:
    """Every judge an `EvalConfig` names, loaded once; a missing package -> `MissingEvalPackage`."""
    return Judges(
        asr={spec: load_asr(spec) for spec in config.asr},
        speaker=load_speaker_judge(config.speaker) if config.speaker else None,
        dnsmos=DNSMOSJudge() if config.dnsmos else None,
        quality=RoundTripQuality(sample_rate),
    )
