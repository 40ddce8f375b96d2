"""`evaluate_music`: what can be measured of a music (piano) pipeline on held-out works, with no speech judge.

- codec: mel distance and SI-SDR of the round trip at every bitrate (`bitrate.quality_by_levels`);
- continuation: each work's first `prompt_seconds` -> `continue_audio` -> the continuation's onset rate,
  pitch-class histogram and pitch centroid against the prompt's (music.py), and the same figures for the
  work's real continuation: the reference a faithful continuation would reach.

    report = evaluate_music(model, utterances, EvalConfig(prompt_seconds=4, seconds=6), out_dir="outputs/piano/eval")
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from audiolm_pl.evaluation.continuation import MIN_REAL_CONTINUATION_SECONDS, generate_continuations, save_continuation
from audiolm_pl.evaluation.music import ClipComparison, compare_measures, continuation_onset_rates, music_measures
from audiolm_pl.evaluation.results import finite_json
from audiolm_pl.semantic.corpus import Utterance


@dataclass
class MusicSide:
    """Means over the prompts of the generated (or the real) continuations, each against its own prompt."""

    onset_rate: float  # onsets per second
    onset_rate_ratio: float  # continuation / prompt onset rate (prompts with no onset left out)
    pitch_class_l1: float  # L1 distance of pitch-class histograms, in [0, 2]
    pitch_shift_semitones: float  # mean absolute shift of the pitch centroid


@dataclass
class MusicReport:
    config: dict
    works: list[dict]  # key, composer (the shard's speaker field), seconds
    codec: dict[int, dict[str, float]]  # levels -> kbps, mel_distance, si_sdr (means over works, full length)
    prompt_onset_rate: Optional[float]
    generated: Optional[MusicSide]
    real: Optional[MusicSide]
    continuations: list[dict]  # per work: prompt / generated / real measures and comparisons
    files: list[str]
    wall_seconds: dict[str, float]

    def to_dict(self) -> dict:
        return finite_json(asdict(self))


def _side(comparisons: list[ClipComparison], rates: list[float]) -> MusicSide:
    def mean(values) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return MusicSide(mean(rates), mean([c.onset_rate_ratio for c in comparisons]), mean([c.pitch_class_l1 for c in comparisons]),
                     mean([abs(c.pitch_shift_semitones) for c in comparisons]))


def music_continuations(model, utterances: list[Utterance], config, out_dir: Optional[Path]) -> dict:
    """Works long enough for a prompt + 1 s of real continuation -> prompt_onset_rate, generated, real, rows, files."""
    rate, prompt_samples = model.sample_rate, int(config.prompt_seconds * model.sample_rate)
    chosen = [u for u in utterances if len(u.wav) >= prompt_samples + MIN_REAL_CONTINUATION_SECONDS * rate]
    if not chosen:
        return {"prompt_onset_rate": None, "generated": None, "real": None, "rows": [], "files": []}
    prompts = [u.wav[:prompt_samples] for u in chosen]
    wavs = generate_continuations(model, prompts, config.seconds, config.batch_size, config.seed)
    rows, files, comparisons = [], [], {"generated": [], "real": []}
    for index, (utterance, wav) in enumerate(zip(chosen, wavs)):
        prompt = music_measures(prompts[index], rate)
        row = {"key": utterance.key, "prompt": asdict(prompt)}
        wholes = {"generated": wav, "real": utterance.wav[: prompt_samples + int(config.seconds * rate)]}  # prompt first
        for kind, whole in wholes.items():
            measures = music_measures(whole[prompt_samples:], rate)
            # onsets on prompt + continuation: a note held over the boundary is no new onset
            prompt.onset_rate, measures.onset_rate = continuation_onset_rates(whole, prompt_samples, rate)
            comparisons[kind].append(compare_measures(prompt, measures))
            row[kind] = {**asdict(measures), **asdict(comparisons[kind][-1])}
        if out_dir is not None:
            row["file"] = save_continuation(out_dir, index, utterance, wav, config.prompt_seconds)
            files.append(row["file"])
        rows.append(row)
    sides = {kind: _side(comparisons[kind], [row[kind]["onset_rate"] for row in rows]) for kind in comparisons}
    return {"prompt_onset_rate": float(np.mean([row["prompt"]["onset_rate"] for row in rows])), **sides,
            "rows": rows, "files": files}


def evaluate_music(model, utterances: list[Utterance], config, out_dir: str | Path | None = None) -> MusicReport:
    """Held-out works (`load_eval_utterances`, at `model.sample_rate`) -> `MusicReport`; `config` is an `EvalConfig`
    (prompt_seconds, seconds, batch_size, seed, sections: "codec" and/or "continuation"). With `out_dir`, writes
    eval.json, report.md and continuations/ there."""
    if not utterances:
        raise ValueError("no held-out works to evaluate")
    from audiolm_pl.evaluation.bitrate import quality_by_levels

    started = time.perf_counter()
    codec = quality_by_levels(model.codec, [u.wav for u in utterances], model.device) if "codec" in config.sections else {}
    wall = {"codec": time.perf_counter() - started}
    empty = {"prompt_onset_rate": None, "generated": None, "real": None, "rows": [], "files": []}
    continued = (music_continuations(model, utterances, config, Path(out_dir) if out_dir else None)
                 if "continuation" in config.sections else empty)
    wall["continuation"] = time.perf_counter() - started - wall["codec"]
    wall["total"] = time.perf_counter() - started
    report = MusicReport(asdict(config), [{"key": u.key, "composer": u.speaker, "seconds": len(u.wav) / u.sample_rate}
                                          for u in utterances], codec, continued["prompt_onset_rate"], continued["generated"],
                         continued["real"], continued["rows"], continued["files"],
                         {key: round(value, 2) for key, value in wall.items()})
    if out_dir is not None:
        write_music_outputs(report, Path(out_dir))
    return report


def music_markdown(report: MusicReport, out_dir: Optional[Path] = None) -> str:
    from audiolm_pl.evaluation.markdown import _number

    config = report.config
    lines = ["# audiolm_pl evaluation (music)", "",
             f"{len(report.works)} held-out works of {len({w['composer'] for w in report.works})} composers, prompts "
             f"{config['prompt_seconds']:g} s, continuations {config['seconds']:g} s, seed {config['seed']}. "
             f"Wall time {report.wall_seconds['total']:.1f} s. Measures: docs/evaluation.md (music).", ""]
    if report.codec:
        lines += ["## Codec round trip per bitrate (full-length works)", "", "| levels | kbps | mel distance | SI-SDR (dB) |",
                  "|---|---|---|---|"]
        lines += [f"| {level} | {f['kbps']:g} | {_number(f['mel_distance'])} | {_number(f['si_sdr'])} |"
                  for level, f in report.codec.items()] + [""]
    lines += ["## Continuation: does it keep the prompt's tempo and pitch content?", ""]
    if report.generated is None:
        return "\n".join(lines + ["Skipped (no continuation section, or no work long enough).", ""])
    lines += [f"Prompt onset rate (mean): {_number(report.prompt_onset_rate)} /s.", "",
              "| measure | generated | real continuation (reference) |", "|---|---|---|"]
    for name, key in (("onsets per second", "onset_rate"), ("onset rate / prompt's", "onset_rate_ratio"),
                      ("pitch-class histogram L1 to prompt (0-2)", "pitch_class_l1"),
                      ("abs. pitch-centroid shift (semitones)", "pitch_shift_semitones")):
        lines.append(f"| {name} | {_number(getattr(report.generated, key))} | {_number(getattr(report.real, key))} |")
    lines += ["", "Files (prompt + continuation; a spectrogram PNG beside each):", ""]
    lines += [f"- {Path(path).relative_to(out_dir) if out_dir else path}" for path in report.files] or ["- (not written)"]
    return "\n".join(lines + ["", "Per-work figures: eval.json.", ""])


def write_music_outputs(report: MusicReport, out_dir: Path) -> None:
    import json

    from audiolm_pl.fileio import atomic_write_text

    atomic_write_text(out_dir / "eval.json", json.dumps(report.to_dict(), indent=1, allow_nan=False))
    atomic_write_text(out_dir / "report.md", music_markdown(report, out_dir))
