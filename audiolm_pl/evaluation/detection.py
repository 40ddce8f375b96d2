"""The detector section of `evaluate_pipeline`: a trained generated-audio detector (docs/detector.md) judging
the evaluated held-out audio, its codec round trip and the generated continuations.

A file is called synthetic when P(synthetic) > 0.5. Accuracy is reported per class and balanced (the mean of the
real and the synthetic accuracies), so a detector that calls everything synthetic scores 0.5, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from audiolm_pl.semantic.corpus import Utterance


@dataclass
class DetectorSection:
    checkpoint: str
    real_accuracy: float  # held-out originals called real
    codec_accuracy: float  # their codec round trips (all levels) called synthetic
    generated_accuracy: Optional[float]  # written continuations (prompt cut off) called synthetic; None: none written
    accuracy: float  # balanced: mean of the real accuracy and the mean synthetic accuracy
    counts: dict[str, int]  # real, codec, generated


@torch.inference_mode()
def detector_section(checkpoint: str, model, utterances: list[Utterance], continuation_files: list[str],
                     prompt_seconds: float) -> DetectorSection:
    """`continuation_files`: prompt + continuation wavs (the continuation section's files); the first
    `prompt_seconds` of each are real audio and are cut off before judging."""
    from audiolm_pl.data.audio import load_mono
    from audiolm_pl.detector.lightning import file_probability, load_detector

    detector = load_detector(checkpoint)
    rate = detector.model.sample_rate
    if rate != model.sample_rate:
        raise ValueError(f"detector {checkpoint} judges {rate} Hz audio; the pipeline makes {model.sample_rate} Hz")

    def synthetic(wav) -> bool:
        return file_probability(detector, torch.as_tensor(wav, dtype=torch.float32)) > 0.5

    real = [not synthetic(u.wav) for u in utterances]
    codec = []
    for utterance in utterances:
        codes = model.codec.encode(torch.from_numpy(utterance.wav)[None].to(model.device))  # (1, T_a, Q)
        codec.append(synthetic(model.codec.decode(codes)[0, : len(utterance.wav)].float().cpu()))  # (T,)
    generated = [synthetic(load_mono(path, rate)[int(prompt_seconds * rate):]) for path in continuation_files]
    synthetic_accuracy = float(np.mean(codec + generated))
    return DetectorSection(str(checkpoint), float(np.mean(real)), float(np.mean(codec)),
                           float(np.mean(generated)) if generated else None,
                           (float(np.mean(real)) + synthetic_accuracy) / 2,
                           {"real": len(real), "codec": len(codec), "generated": len(generated)})
