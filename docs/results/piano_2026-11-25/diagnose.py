"""The diagnosis rows of docs/results/piano_2026-11-25.md, on a finished `audiolm-pl main corpus=piano` work directory.

For each held-out work the main job's eval judged (same selection, seed 0): the music measures of the real
continuation after a codec round trip at the 4 levels the pipeline decodes (what a perfect LM could reach through this
codec), and how many distinct semantic ids / first-level codes the real and the generated continuations hold; then
whether the codec's magnitude or its phase loses the pitch: the round trip re-synthesised with the original's phase
(or the original's magnitude with the round trip's phase) through the codec's own STFT (n_fft 640, hop 160), judged by
the pitch-class L1 to the original continuation and by the share of the energy (5-9 s) within 2 Hz of a multiple of
50 Hz, the codec's frame rate (2-9 % for the real recordings: a buzz at the frame rate reads ~90 %).

    python docs/results/piano_2026-11-25/diagnose.py outputs/piano     # -> OUT/diagnose.json + 3 spectrogram PNGs
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from audiolm_pl.evaluation.music import compare_measures, continuation_onset_rates, music_measures
from audiolm_pl.evaluation.selection import load_eval_utterances
from audiolm_pl.inference.audiolm import AudioLM
from audiolm_pl.plotting import save_spectrogram_png

PROMPT_SECONDS, SECONDS, LEVELS = 4.0, 7.0, 4  # the main job's eval


def measures(whole: np.ndarray, prompt_samples: int, rate: int) -> dict:
    """prompt + continuation (T,) -> the continuation's onset rate, its ratio to the prompt's, pitch-class L1."""
    prompt, clip = music_measures(whole[:prompt_samples], rate), music_measures(whole[prompt_samples:], rate)
    prompt.onset_rate, clip.onset_rate = continuation_onset_rates(whole, prompt_samples, rate)
    compared = compare_measures(prompt, clip)
    return {"onset_rate": round(clip.onset_rate, 3), "ratio": round(compared.onset_rate_ratio, 3),
            "pc_l1": round(compared.pitch_class_l1, 3)}


def comb_share(wav: np.ndarray, rate: int, frame_rate: float = 50.0) -> float:
    """Share of the energy above 40 Hz within 2 Hz of a multiple of `frame_rate` (wav (T,), one long FFT)."""
    power = np.abs(np.fft.rfft(wav * np.hanning(len(wav)))) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / rate)
    audible = freqs > 40
    near = np.abs((freqs + frame_rate / 2) % frame_rate - frame_rate / 2) < 2
    return float(power[near & audible].sum() / power[audible].sum())


def phase_or_magnitude(whole: np.ndarray, round_trip: np.ndarray, prompt_samples: int, rate: int) -> dict:
    """Original and round trip (T,) -> {decode: (comb share, pitch-class L1 to the original continuation)}."""
    from audiolm_pl.evaluation.music import pitch_class_histogram

    window = torch.hann_window(640)
    stft = lambda x: torch.stft(torch.from_numpy(x), 640, 160, window=window, return_complex=True)  # (bins, frames)
    istft = lambda spec: torch.istft(spec, 640, 160, window=window, length=len(whole)).numpy()  # (T,)
    original, decoded = stft(whole), stft(round_trip.astype(np.float32))
    decodes = {"round trip": round_trip, "round-trip magnitude + true phase": istft(torch.polar(decoded.abs(), original.angle())),
               "true magnitude + round-trip phase": istft(torch.polar(original.abs(), decoded.angle()))}
    reference = pitch_class_histogram(whole[prompt_samples:], rate)
    return {name: (round(comb_share(wav[5 * rate : 9 * rate], rate), 3),
                   round(float(np.abs(pitch_class_histogram(wav[prompt_samples:], rate) - reference).sum()), 3))
            for name, wav in decodes.items()}


def diagnose(root: Path) -> list[dict]:
    model = AudioLM.from_config(root / "pipeline.yaml")
    rate = model.sample_rate
    prompt_samples = int(PROMPT_SECONDS * rate)
    semantic_prompt = int(PROMPT_SECONDS * model.semantic_tokenizer.token_spec.frame_rate)
    acoustic_prompt = int(PROMPT_SECONDS * model.codec.token_spec.frame_rate)
    rows = []
    for index, utterance in enumerate(load_eval_utterances(root / "shards/piano/val", rate, per_speaker=2, min_seconds=0.0)):
        whole = utterance.wav[: prompt_samples + int(SECONDS * rate)].astype(np.float32)  # (T,) prompt first
        if len(whole) < prompt_samples + rate:  # as the eval: at least 1 s of real continuation
            continue
        with torch.inference_mode():
            codes = model.codec.encode(torch.from_numpy(whole)[None])  # (1, T_a, Q)
            round_trip = model.codec.decode(codes[:, :, :LEVELS])[0, : len(whole)].float().numpy()  # (T',)
            real_ids = model.semantic_tokenizer.encode(torch.from_numpy(whole)[None])[0].numpy()  # (T_s,)
            generated = model.continue_audio(torch.from_numpy(whole[:prompt_samples]), SECONDS, seed=index)
        round_trip = np.pad(round_trip, (0, len(whole) - len(round_trip)))
        swapped = phase_or_magnitude(whole, round_trip, prompt_samples, rate) if len(whole) >= 9 * rate else None
        round_trip[:prompt_samples] = whole[:prompt_samples]  # the prompt itself, as continue_audio keeps it
        generated_ids = generated.semantic_ids[0].cpu().numpy()
        rows.append({"key": utterance.key, "real": measures(whole, prompt_samples, rate),
                     "codec_round_trip": measures(round_trip, prompt_samples, rate),
                     "distinct_semantic_ids": {"real": len(set(real_ids[semantic_prompt:])),
                                               "generated": len(set(generated_ids[semantic_prompt:]))},
                     "distinct_level1_codes": {"real": len(set(codes[0, acoustic_prompt:, 0].tolist())),
                                               "generated": len(set(generated.codes[0, acoustic_prompt:, 0].tolist()))},
                     "comb_share_generated": round(comb_share(generated.wav[0, 5 * rate : 9 * rate].cpu().numpy(), rate), 3),
                     "phase_or_magnitude": swapped})
        if index < 3:
            save_spectrogram_png(round_trip, rate, root / f"diagnose-{index}.png", prompt_seconds=PROMPT_SECONDS,
                                 title=f"{utterance.key}: prompt + codec round trip ({LEVELS} levels) of the real continuation")
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    rows = diagnose(root)
    (root / "diagnose.json").write_text(json.dumps(rows, indent=1))
    for kind in ("real", "codec_round_trip"):
        print(kind, "onset ratio", round(float(np.nanmean([r[kind]["ratio"] for r in rows])), 3),
              "pitch-class L1", round(float(np.mean([r[kind]["pc_l1"] for r in rows])), 3))
    for row in rows:
        print(row["key"], row["distinct_semantic_ids"], row["distinct_level1_codes"], row["comb_share_generated"])
    swaps = [row["phase_or_magnitude"] for row in rows if row["phase_or_magnitude"]]
    for name in swaps[0]:
        print(f"{name}: comb share {np.mean([s[name][0] for s in swaps]):.3f}, "
              f"pitch-class L1 to the original {np.mean([s[name][1] for s in swaps]):.3f}")
