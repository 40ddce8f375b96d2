"""Speaker embeddings, and speaker identification among the evaluated speakers.

    judge = load_speaker_judge("resemblyzer")      # or "xvector:DIR", "mfcc"
    embedding = judge.embed(wav, 16000)             # (D,) float32

- `ResemblyzerSpeaker` (default): resemblyzer's GE2E VoiceEncoder (weights inside the package),
  on `preprocess_wav` output at 16 kHz (volume normalised, long silences trimmed).
- `XVectorSpeaker`: a local transformers `...ForXVector` directory (WavLM / UniSpeech-SAT).
- `MFCCStatisticsSpeaker`: mean and std of MFCCs, a weak stand-in with no model at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from audiolm_pl.evaluation.asr import JUDGE_RATE, to_judge_rate
from audiolm_pl.evaluation.packages import import_judge_package


class SpeakerJudge(Protocol):
    name: str

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray: ...


class ResemblyzerSpeaker:
    name = "resemblyzer (GE2E VoiceEncoder)"

    def __init__(self):
        self.resemblyzer = import_judge_package("resemblyzer", "resemblyzer speaker")
        self.encoder = self.resemblyzer.VoiceEncoder(device="cpu", verbose=False)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = to_judge_rate(wav, sample_rate)
        trimmed = self.resemblyzer.preprocess_wav(wav, source_sr=JUDGE_RATE)
        if len(trimmed) < JUDGE_RATE // 4:  # the VAD found (almost) no voice: embed what there is
            trimmed = wav
        return self.encoder.embed_utterance(trimmed).astype(np.float32)  # (256,), unit norm


class XVectorSpeaker:
    def __init__(self, directory: str | Path):
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"speaker model xvector:{directory} is not a directory "
                                    "(expected a local save_pretrained x-vector model)")
        from transformers import AutoFeatureExtractor, AutoModelForAudioXVector

        self.name = f"x-vector model {directory}"
        self.extractor = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True)
        self.model = AutoModelForAudioXVector.from_pretrained(directory, local_files_only=True).eval()

    @torch.no_grad()
    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        inputs = self.extractor(to_judge_rate(wav, sample_rate), sampling_rate=JUDGE_RATE, return_tensors="pt")
        return self.model(**inputs).embeddings[0].numpy()  # (D,)


class MFCCStatisticsSpeaker:
    name = "mfcc-statistics (a weak stand-in, no speaker model)"

    def __init__(self):
        from audiolm_pl.semantic.features import MelConfig, MelFeatures

        self.features = MelFeatures(MelConfig(kind="mfcc", deltas=False), JUDGE_RATE)

    @torch.no_grad()
    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        frames = self.features(torch.from_numpy(to_judge_rate(wav, sample_rate))[None])[0]  # (T_f, D)
        return torch.cat([frames.mean(0), frames.std(0)]).numpy()  # (2 D,)


def load_speaker_judge(spec: str) -> SpeakerJudge:
    """"resemblyzer" | "xvector:DIR" | "mfcc" -> a loaded speaker embedder."""
    kind, _, argument = spec.partition(":")
    if kind == "resemblyzer" and not argument:
        return ResemblyzerSpeaker()
    if kind == "xvector" and argument:
        return XVectorSpeaker(argument)
    if kind == "mfcc" and not argument:
        return MFCCStatisticsSpeaker()
    raise ValueError(f"unknown speaker judge {spec!r}; use resemblyzer, xvector:DIR or mfcc")


@dataclass
class SpeakerID:
    """Speaker identification of test clips against enrollments made from prompts."""

    accuracy: float  # fraction of clips whose own speaker's enrollment is the closest
    mean_cosine: float  # mean cosine between a clip and its own speaker's enrollment
    correct: list[bool]  # per clip
    cosine_own: list[float]  # per clip
    cosine_best_other: list[float | None]  # per clip: the closest other speaker (None with one speaker)
    self_enrolled: list[str]  # speakers with one utterance: enrolled on that utterance's own prompt
    num_speakers: int


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def speaker_identification(prompt_embeddings: np.ndarray, speakers: Sequence[str], test_embeddings: np.ndarray) -> SpeakerID:
    """prompt_embeddings (N, D), speakers (N,), test_embeddings (N, D): row i is a clip of speakers[i].

    Speaker s's enrollment is the mean of its prompts' embeddings; for clip i its own speaker's
    enrollment leaves out prompt i (leave-one-out), unless that speaker has only one utterance,
    which is then enrolled on its own prompt. Clip i is correct when its cosine to its own
    speaker's enrollment beats every other speaker's.
    """
    prompts, tests = _unit(np.asarray(prompt_embeddings, np.float64)), _unit(np.asarray(test_embeddings, np.float64))
    names = sorted(set(speakers))
    members = {name: [i for i, s in enumerate(speakers) if s == name] for name in names}
    enrollment = {name: prompts[rows].mean(0) for name, rows in members.items()}  # name -> (D,)
    correct, own_cosines, other_cosines = [], [], []
    for i, speaker in enumerate(speakers):
        others_of_speaker = [j for j in members[speaker] if j != i]
        own = prompts[others_of_speaker].mean(0) if others_of_speaker else prompts[i]  # (D,)
        cosine_own = float(_unit(own) @ tests[i])
        others = [float(_unit(enrollment[name]) @ tests[i]) for name in names if name != speaker]
        best_other = max(others) if others else None
        correct.append(best_other is None or cosine_own > best_other)
        own_cosines.append(cosine_own)
        other_cosines.append(best_other)
    return SpeakerID(float(np.mean(correct)), float(np.mean(own_cosines)), correct, own_cosines, other_cosines,
                     [name for name, rows in members.items() if len(rows) == 1], len(names))
