"""The codec round trip and acoustic generation sections of `evaluate_pipeline`."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from audiolm_pl.evaluation.bitrate import quality_by_levels
from audiolm_pl.evaluation.judges import Judges
from audiolm_pl.evaluation.results import AcousticSection, CodecSection
from audiolm_pl.evaluation.selection import is_whole_recording, speaker_group
from audiolm_pl.evaluation.text import error_rates, normalize_text
from audiolm_pl.semantic.corpus import Utterance


def has_reference_text(utterance: Utterance) -> bool:
    """ASR is judged only on whole recordings with a non-empty normalised text."""
    return bool(normalize_text(utterance.text)) and is_whole_recording(utterance)


def _means(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys if any(key in row for row in rows)}


def _judged(transcript: str, reference: str) -> dict:
    """One utterance's transcript with its own WER/CER (the section figures pool all utterances)."""
    rates = error_rates([transcript], [reference])
    return {"transcript": transcript, "wer": rates.wer, "cer": rates.cer}


def _pooled(judges: Judges, rows: list[dict], kinds: tuple[str, ...]) -> dict[str, dict]:
    """judge -> kind -> ErrorRates pooled over the rows that have a reference text."""
    texted = [row for row in rows if row["text"]]
    return {spec: {kind: error_rates([row["asr"][spec][kind]["transcript"] for row in texted], [row["text"] for row in texted])
                   for kind in kinds} for spec in judges.asr}


@torch.inference_mode()
def codec_section(model, utterances: list[Utterance], judges: Judges) -> CodecSection:
    codec, rate = model.codec, model.sample_rate
    rows = []
    for utterance in tqdm(utterances, desc="eval codec round trip", leave=False):
        original = torch.from_numpy(utterance.wav)  # (T,)
        codes = codec.encode(original[None].to(model.device))  # (1, T_a, Q)
        reconstruction = codec.decode(codes)[0, : len(original)].float().cpu()  # (T',)
        reconstruction = torch.nn.functional.pad(reconstruction, (0, len(original) - len(reconstruction)))  # (T,)
        row = {"key": utterance.key, "speaker": utterance.speaker, "text": "", **judges.quality(reconstruction, original)}
        if has_reference_text(utterance):
            row["text"] = utterance.text
            row["asr"] = {spec: {"original": _judged(judges.transcribe_original(spec, utterance), utterance.text),
                                 "roundtrip": _judged(judge.transcribe(reconstruction.numpy(), rate), utterance.text)}
                          for spec, judge in judges.asr.items()}
        rows.append(row)
    asr = _pooled(judges, rows, ("original", "roundtrip"))
    ratio = {spec: (rates["roundtrip"].wer / rates["original"].wer
                    if rates["original"] is not None and rates["original"].wer > 0 else None)
             for spec, rates in asr.items()}
    groups = sorted({speaker_group(u.speaker) for u in utterances})
    return CodecSection(codec.num_quantizers, _group_figures(judges, rows),
                        {group: _group_figures(judges, [r for r in rows if speaker_group(r["speaker"]) == group]) for group in groups},
                        asr, ratio, rows, quality_by_levels(codec, [u.wav for u in utterances], model.device))


def _group_figures(judges: Judges, rows: list[dict]) -> dict[str, float]:
    """Means of the signal figures and each judge's pooled WER of originals and round trips."""
    figures = _means(rows, ("stoi", "pesq", "mel_distance", "si_sdr"))
    for spec, rates in _pooled(judges, rows, ("original", "roundtrip")).items():
        for kind, rate in rates.items():
            if rate is not None:
                figures[f"wer_{kind}_{spec}"] = rate.wer
    return figures


@torch.inference_mode()
def acoustic_section(model, utterances: list[Utterance], judges: Judges, seed: int) -> AcousticSection:
    """Semantic ids of each utterance with text -> `generate_acoustics` -> every ASR judge."""
    texted = [u for u in utterances if has_reference_text(u)]
    if not texted or not judges.asr:
        reason = "no ASR judge" if not judges.asr else "no evaluated utterance has a reference text (whole recording)"
        return AcousticSection({}, [], reason)
    rows = []
    for index, utterance in enumerate(tqdm(texted, desc="eval acoustic generation", leave=False)):
        wav = torch.from_numpy(utterance.wav)[None].to(model.device)  # (1, T)
        semantic_ids = model.semantic_tokenizer.encode(wav)  # (1, T_s)
        generated = model.generate_acoustics(semantic_ids=semantic_ids, seed=seed + index).wav[0].float().cpu().numpy()  # (T',)
        rows.append({
            "key": utterance.key, "speaker": utterance.speaker, "text": utterance.text,
            "seconds": len(generated) / model.sample_rate,
            "asr": {spec: {"generated": _judged(judge.transcribe(generated, model.sample_rate), utterance.text),
                           "original": _judged(judges.transcribe_original(spec, utterance), utterance.text)}
                    for spec, judge in judges.asr.items()},
        })
    return AcousticSection(_pooled(judges, rows, ("generated", "original")), rows)
