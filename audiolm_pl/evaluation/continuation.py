"""The continuation section of `evaluate_pipeline`: prompts -> `continue_audio` -> judges, with
the real rest of each utterance judged the same way as the ceiling."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from audiolm_pl.evaluation.judges import Judges
from audiolm_pl.evaluation.measures import speech_measures
from audiolm_pl.evaluation.results import ContinuationSection, ContinuationSide
from audiolm_pl.evaluation.speaker import speaker_identification
from audiolm_pl.semantic.corpus import Utterance

MIN_REAL_CONTINUATION_SECONDS = 1.0


def generate_continuations(model, prompts: list[np.ndarray], seconds: float, batch_size: int, seed: int) -> list[np.ndarray]:
    """Prompts of equal length (T_p,) -> prompt + continuation wavs (T,), `batch_size` prompts per
    `continue_audio` call (batch b is seeded with seed + b)."""
    wavs = []
    starts = range(0, len(prompts), batch_size)
    for batch_index, start in enumerate(tqdm(starts, desc="eval continuation: generate", leave=False)):
        batch = torch.from_numpy(np.stack(prompts[start : start + batch_size]))  # (B, T_p)
        result = model.continue_audio(batch, seconds, num_samples=len(batch), seed=seed + batch_index)
        wavs += list(result.wav.float().cpu().numpy())  # B x (T,)
    return wavs


def _judge_clip(judges: Judges, wav: np.ndarray, rate: int) -> dict:
    words_per_second, transcript = judges.words_per_second(wav, rate)
    row = {"seconds": len(wav) / rate, **vars(speech_measures(wav, rate)), "words_per_second": words_per_second,
           "transcript": transcript}
    if judges.dnsmos is not None:
        row["dnsmos"] = judges.dnsmos(wav, rate)
    return row


def _side(rows: list[dict], identification) -> ContinuationSide:
    def mean(key: str) -> Optional[float]:
        values = [row[key] for row in rows if row[key] is not None]
        return float(np.mean(values)) if values else None

    dnsmos = {k: float(np.mean([row["dnsmos"][k] for row in rows])) for k in rows[0].get("dnsmos", {})}
    return ContinuationSide(mean("seconds"), identification.accuracy, identification.mean_cosine, mean("spectral_change_db"),
                            mean("voiced_fraction"), mean("spectral_flatness"), mean("words_per_second"), dnsmos)


def save_continuation(out_dir: Path, index: int, utterance: Utterance, wav: np.ndarray, prompt_seconds: float) -> str:
    import soundfile

    from audiolm_pl.plotting import save_spectrogram_png

    stem = utterance.key.rsplit("/", 1)[-1]  # keys are often <speaker>/<utterance>
    name = f"{index:03d}-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    path = out_dir / "continuations" / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav, utterance.sample_rate)
    save_spectrogram_png(wav, utterance.sample_rate, path.with_suffix(".png"), prompt_seconds=prompt_seconds,
                         title=f"{utterance.speaker}: {prompt_seconds:g} s prompt (left of the line) + continuation")
    return str(path)


def continuation_section(model, utterances: list[Utterance], judges: Judges, prompt_seconds: float, seconds: float,
                         batch_size: int, seed: int, out_dir: Optional[Path] = None) -> ContinuationSection:
    rate = model.sample_rate
    prompt_samples = int(prompt_seconds * rate)
    chosen = [u for u in utterances if len(u.wav) >= prompt_samples + MIN_REAL_CONTINUATION_SECONDS * rate]
    if not chosen or judges.speaker is None:
        reason = ("no speaker judge" if judges.speaker is None else
                  f"no evaluated utterance is at least {prompt_seconds + MIN_REAL_CONTINUATION_SECONDS:g} s long")
        return ContinuationSection(0, 0, None, None, None, [], [], [], reason)
    prompts = [u.wav[:prompt_samples] for u in chosen]
    wavs = generate_continuations(model, prompts, seconds, batch_size, seed)
    rows, files = [], []
    embeddings = {"prompt": [], "generated": [], "real": []}
    for index, (utterance, wav) in enumerate(tqdm(list(zip(chosen, wavs)), desc="eval continuation: judge", leave=False)):
        clips = {"prompt": prompts[index], "generated": wav[prompt_samples:],
                 "real": utterance.wav[prompt_samples : prompt_samples + int(seconds * rate)]}
        for kind, clip in clips.items():
            embeddings[kind].append(judges.speaker.embed(clip, rate))
        row = {"key": utterance.key, "speaker": utterance.speaker,
               "generated": _judge_clip(judges, clips["generated"], rate), "real": _judge_clip(judges, clips["real"], rate)}
        if out_dir is not None:
            row["file"] = save_continuation(Path(out_dir), index, utterance, wav, prompt_seconds)
            files.append(row["file"])
        rows.append(row)
    speakers = [u.speaker for u in chosen]
    identified = {kind: speaker_identification(np.stack(embeddings["prompt"]), speakers, np.stack(embeddings[kind]))
                  for kind in ("generated", "real")}
    for kind, result in identified.items():
        for row, correct, cosine, other in zip(rows, result.correct, result.cosine_own, result.cosine_best_other):
            row[kind].update(speaker_correct=correct, speaker_cosine=cosine, speaker_best_other_cosine=other)
    generated, real = (_side([row[kind] for row in rows], identified[kind]) for kind in ("generated", "real"))
    match = 100 * generated.speaker_accuracy / real.speaker_accuracy if real.speaker_accuracy > 0 else None
    return ContinuationSection(len(chosen), identified["real"].num_speakers, generated, real, match,
                               identified["real"].self_enrolled, files, rows)
