"""`evaluate_pipeline`: the figures the project is judged by, for an `AudioLM` on held-out utterances.

    from audiolm_pl.evaluation import EvalConfig, evaluate_pipeline, load_eval_utterances
    config = EvalConfig(per_speaker=2, prompt_seconds=3, seconds=7)
    utterances = load_eval_utterances("outputs/main/shards/speech/val", model.sample_rate,
                                      config.per_speaker, config.min_utterance_seconds, config.seed)
    report = evaluate_pipeline(model, utterances, config, out_dir="outputs/main/eval")
    report.targets  # [Target(name, figure, reference, requirement, passed, note), ...]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from audiolm_pl.evaluation.continuation import MIN_REAL_CONTINUATION_SECONDS, continuation_section
from audiolm_pl.evaluation.judges import Judges, load_judges
from audiolm_pl.evaluation.results import EvalReport, target_table
from audiolm_pl.evaluation.sections import acoustic_section, codec_section
from audiolm_pl.evaluation.selection import speaker_group
from audiolm_pl.semantic.corpus import Utterance

if TYPE_CHECKING:
    from audiolm_pl.inference.audiolm import AudioLM

SECTIONS = ("codec", "acoustic", "continuation")


@dataclass
class EvalConfig:
    per_speaker: int = 2  # utterances per held-out speaker
    prompt_seconds: float = 3.0
    seconds: float = 7.0  # continuation length
    asr: list[str] = field(default_factory=lambda: ["whisper", "sphinx"])  # whisper | sphinx | hf:DIR
    speaker: str = "resemblyzer"  # resemblyzer | xvector:DIR | mfcc
    dnsmos: bool = True
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    batch_size: int = 8  # prompts per continue_audio call
    seed: int = 0
    music: bool = False  # music (piano): codec bitrates and tempo / pitch-class measures, no speech judge
    acoustic_only_coarse: str = ""  # an acoustic-only coarse LM run: its continuations of the same prompts beside ours
    detector: str = ""  # a detector checkpoint: its accuracy on the held-out audio, round trips and continuations

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown eval sections {unknown}; choose from {list(SECTIONS)}")
        if self.per_speaker < 1 or self.batch_size < 1:
            raise ValueError("per_speaker and batch_size must be at least 1")

    @property
    def min_utterance_seconds(self) -> float:
        """Utterances this long can be continued (prompt + at least 1 s of real continuation)."""
        return self.prompt_seconds + MIN_REAL_CONTINUATION_SECONDS


def evaluate_pipeline(model: AudioLM, utterances: list[Utterance], config: EvalConfig, judges: Optional[Judges] = None,
                      out_dir: str | Path | None = None, acoustic_only: Optional[AudioLM] = None) -> EvalReport:
    """utterances (e.g. `load_eval_utterances(...)`, at `model.sample_rate`) -> `EvalReport`.

    `judges` (`load_judges(config, model.sample_rate)`) can be passed to reuse loaded judges across calls. With
    `out_dir`, writes `eval.json`, `report.md` and `continuations/*.wav` + `*.png` there. `acoustic_only`: the same
    pipeline with an acoustic-only coarse LM; its continuations of the same prompts (same seed) are judged too.
    `config.detector`: that detector judges the utterances, their round trips and the written continuations.
    """
    if not utterances:
        raise ValueError("no utterances to evaluate")
    started = time.perf_counter()
    judges = judges or load_judges(config, model.sample_rate)
    wall = {"load judges": time.perf_counter() - started}
    sections = {}
    for name in SECTIONS:
        if name not in config.sections:
            sections[name] = None
            continue
        section_started = time.perf_counter()
        if name == "codec":
            sections[name] = codec_section(model, utterances, judges)
        elif name == "acoustic":
            sections[name] = acoustic_section(model, utterances, judges, config.seed)
        else:
            sections[name] = continuation_section(model, utterances, judges, config.prompt_seconds, config.seconds,
                                                  config.batch_size, config.seed, out_dir)
        wall[name] = time.perf_counter() - section_started
    extra = _ablation_and_detector(model, utterances, judges, config, sections["continuation"], acoustic_only, out_dir)
    wall.update(extra.pop("wall"))
    wall["total"] = time.perf_counter() - started
    report = EvalReport(
        config=asdict(config), judges=judges.names(),
        utterances=[{"key": u.key, "speaker": u.speaker, "group": speaker_group(u.speaker),
                     "seconds": len(u.wav) / u.sample_rate, "text": u.text} for u in utterances],
        codec=sections["codec"], acoustic=sections["acoustic"], continuation=sections["continuation"],
        targets=target_table(sections["codec"], sections["acoustic"], sections["continuation"]),
        wall_seconds={key: round(value, 2) for key, value in wall.items()}, **extra,
    )
    if out_dir is not None:
        write_eval_outputs(report, Path(out_dir))
    return report


def _ablation_and_detector(model, utterances, judges, config: EvalConfig, continuation, acoustic_only,
                           out_dir) -> dict:
    """The acoustic-only continuation section (no files written) and the detector section, where asked for."""
    from audiolm_pl.evaluation.detection import detector_section

    extra, wall = {"acoustic_only": None, "detector": None}, {}
    if acoustic_only is not None:
        started = time.perf_counter()
        extra["acoustic_only"] = continuation_section(acoustic_only, utterances, judges, config.prompt_seconds,
                                                      config.seconds, config.batch_size, config.seed)
        wall["acoustic-only continuation"] = time.perf_counter() - started
    if config.detector:
        started = time.perf_counter()
        files = continuation.files if continuation is not None else []
        extra["detector"] = detector_section(config.detector, model, utterances, files, config.prompt_seconds)
        wall["detector"] = time.perf_counter() - started
    return {**extra, "wall": wall}


def write_eval_outputs(report: EvalReport, out_dir: Path) -> None:
    import json

    from audiolm_pl.evaluation.markdown import report_markdown
    from audiolm_pl.fileio import atomic_write_text

    atomic_write_text(out_dir / "eval.json", json.dumps(report.to_dict(), indent=1, allow_nan=False))
    atomic_write_text(out_dir / "report.md", report_markdown(report, str(out_dir)))
