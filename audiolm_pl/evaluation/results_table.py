"""results.md: one row per experiment `eval` has figures for, the paper's figure beside ours, and the
configuration and compute behind ours (read from the stage run directories the pipeline YAML names).

Paper figures: Borsos et al., "AudioLM: a Language Modeling Approach to Audio Generation" (arXiv 2209.03143).
Only figures we are sure of are cited; a row without one says what the paper reports instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

PAPER_ACOUSTIC_WER = 0.060  # acoustic generation from ground-truth semantic tokens (w2v-BERT + SoundStream)
PAPER_ACOUSTIC_CER = 0.034
PAPER_SPEAKER_ID = 0.926  # speaker-ID accuracy of continuations of 3 s prompts
PAPER_DETECTOR = 0.986  # classifier telling AudioLM's output from real speech


@dataclass
class ResultRow:
    experiment: str
    measure: str
    ours: str
    paper: str
    note: str = ""


@dataclass
class RunCompute:
    stage: str
    run: str  # the run directory
    parameters: Optional[int]
    steps: Optional[int]
    minutes: Optional[float]  # summed wall-time span of the run's TensorBoard event files (a resume adds a file)
    device: str  # trainer accelerator x devices, precision, from the run's config.yaml
    config: str  # the stage config's model keys that size it


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _number(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def speech_rows(report) -> list[ResultRow]:
    """An `EvalReport` -> rows for acoustic generation, continuation, acoustic-only, detector and codec bitrates."""
    rows: list[ResultRow] = []
    if report.acoustic is not None:
        for judge, rates in report.acoustic.asr.items():
            generated, original = rates["generated"], rates["original"]
            if generated is None:
                continue
            rows.append(ResultRow("acoustic generation (ground-truth semantic ids -> audio)", f"WER / CER ({judge})",
                                  f"{_percent(generated.wer)} / {_percent(generated.cer)}",
                                  f"{_percent(PAPER_ACOUSTIC_WER)} / {_percent(PAPER_ACOUSTIC_CER)}",
                                  f"original audio: {_percent(original.wer)} / {_percent(original.cer)}; "
                                  f"{generated.utterances} utterances"))
    if report.continuation is not None and report.continuation.generated is not None:
        section = report.continuation
        rows.append(ResultRow("speech continuation", "speaker-ID accuracy", _percent(section.generated.speaker_accuracy),
                              _percent(PAPER_SPEAKER_ID),
                              f"real continuation {_percent(section.real.speaker_accuracy)}; {section.prompts} prompts of "
                              f"{section.num_speakers} speakers (the paper: many more speakers)"))
    rows += _acoustic_only_rows(report)
    if report.detector is not None:
        detector = report.detector
        generated = "" if detector.generated_accuracy is None else f", generated {_percent(detector.generated_accuracy)}"
        rows.append(ResultRow("generated-audio detector", "balanced accuracy", _percent(detector.accuracy), _percent(PAPER_DETECTOR),
                              f"real {_percent(detector.real_accuracy)}, codec round trip {_percent(detector.codec_accuracy)}"
                              f"{generated}; detects our codec, not all codecs (docs/detector.md)"))
    if report.codec is not None:
        rows += bitrate_rows(report.codec.bitrates, "speech")
    return rows


def _acoustic_only_rows(report) -> list[ResultRow]:
    ablation, full = report.acoustic_only, report.continuation
    if ablation is None or ablation.generated is None or full is None or full.generated is None:
        return []
    paper = "no figure cited: listeners hear the voice kept, the words lost"
    return [ResultRow("acoustic-only ablation vs full (same prompts)", "speaker-ID accuracy",
                      f"{_percent(ablation.generated.speaker_accuracy)} vs {_percent(full.generated.speaker_accuracy)}", paper),
            ResultRow("acoustic-only ablation vs full (same prompts)", "ASR words per second",
                      f"{_number(ablation.generated.words_per_second, 2)} vs {_number(full.generated.words_per_second, 2)}",
                      paper, f"real continuation {_number(full.real.words_per_second, 2)}")]


def bitrate_rows(bitrates: dict[int, dict[str, float]], corpus: str) -> list[ResultRow]:
    """Codec quality per number of RVQ levels; the paper's codec runs at 12 levels (6 kbps), its coarse stage 4 levels."""
    return [ResultRow(f"codec round trip, {corpus}", f"{levels} levels ({figures['kbps']:g} kbps): mel distance / SI-SDR",
                      f"{figures['mel_distance']:.3f} / {figures['si_sdr']:.1f} dB", "–", "no per-bitrate figure in the paper")
            for levels, figures in bitrates.items()]


def music_rows(report) -> list[ResultRow]:
    """A `MusicReport` -> codec bitrate rows and the piano continuation's tempo and pitch-class rows."""
    rows = bitrate_rows(report.codec, "piano")
    if report.generated is not None:
        paper = "listening tests only"
        rows += [ResultRow("piano continuation", "onset rate / prompt's", _number(report.generated.onset_rate_ratio, 2), paper,
                           f"real continuation {_number(report.real.onset_rate_ratio, 2)}"),
                 ResultRow("piano continuation", "pitch-class histogram L1 to prompt (0-2)",
                           _number(report.generated.pitch_class_l1, 2), paper,
                           f"real continuation {_number(report.real.pitch_class_l1, 2)}")]
    return rows


def run_compute(stage: str, run: Path, parameters: Optional[int]) -> RunCompute:
    """What a stage run directory says about its training: config, steps, minutes, device."""
    import yaml

    directory = run.parent.parent if run.is_file() and run.parent.name == "checkpoints" else run
    config_path = directory / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    trainer = config.get("trainer") or {}
    device = (f"{trainer.get('accelerator', '?')} x {trainer.get('devices', '?')}, {trainer.get('precision', '?')}"
              if trainer else "n/a (no config.yaml)")
    model = config.get("model") or {}
    sizing = ", ".join(f"{key}={value}" for key, value in model.items() if isinstance(value, (int, float)) and
                       key in ("d_model", "depth", "num_layers", "num_heads", "channels", "num_quantizers", "codebook_size"))
    logged_steps, minutes = _tensorboard_steps_and_minutes(directory)
    steps = _checkpoint_step(run)  # what the pipeline loads, which can be an earlier step*.ckpt than the logs' last
    return RunCompute(stage, str(directory), parameters, logged_steps if steps is None else steps, minutes, device,
                      sizing or "-")


def _checkpoint_step(run: Path) -> Optional[int]:
    """The training step of the checkpoint a pipeline path names (a run directory's last.ckpt or a file); None
    when it is not a Lightning checkpoint (an exported folder, a tokenizer file)."""
    from audiolm_pl.checkpoint import CheckpointError, load_raw

    try:
        step = load_raw(run, mmap=True).get("global_step")  # the weights stay on disk: eval has loaded them already
    except (CheckpointError, OSError, AttributeError):
        return None
    return int(step) if step is not None else None


def _tensorboard_steps_and_minutes(directory: Path) -> tuple[Optional[int], Optional[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, seconds = None, 0.0
    for events in sorted(directory.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        points = [point for tag in accumulator.Tags().get("scalars", []) for point in accumulator.Scalars(tag)]
        if points:
            steps = max(steps or 0, max(point.step for point in points))
            seconds += max(point.wall_time for point in points) - min(point.wall_time for point in points)
    return steps, (round(seconds / 60, 2) if steps is not None else None)


def results_markdown(title: str, rows: list[ResultRow], compute: list[RunCompute], setting: str) -> str:
    lines = [f"# {title}", "", setting, "", "| experiment | measure | ours | paper | note |", "|---|---|---|---|---|"]
    lines += [f"| {r.experiment} | {r.measure} | {r.ours} | {r.paper} | {r.note} |" for r in rows]
    if not rows:
        lines.append("| (no experiment had figures) | | | | |")
    lines += ["", "Paper: Borsos et al., AudioLM (arXiv 2209.03143): three ~0.3 B-parameter LMs, w2v-BERT XL semantic tokens, "
              "SoundStream 12 x 1024 codes, speech models trained on Libri-Light (60 k hours), piano models on ~40 k hours "
              "of piano. Ours: the runs below, "
              "on the embedded corpus.", "",
              "## Configuration and compute behind ours", "",
              "| stage | run | parameters | steps | minutes | device | model |", "|---|---|---|---|---|---|---|"]
    for run in compute:
        parameters = "n/a" if run.parameters is None else f"{run.parameters / 1e6:.2f} M"
        lines.append(f"| {run.stage} | {run.run} | {parameters} | {run.steps if run.steps is not None else 'n/a'} | "
                     f"{_number(run.minutes, 1)} | {run.device} | {run.config} |")
    lines += ["", "Minutes: the wall-time span of each run's TensorBoard logs (training and validation).", ""]
    return "\n".join(lines)


def _parameters(module) -> Optional[int]:
    return None if module is None else sum(p.numel() for p in module.parameters())


def pipeline_compute(pipeline, model, acoustic_only=None, detector: str = "") -> list[RunCompute]:
    """A `PipelineConfig` (paths resolved) and its loaded `AudioLM` -> one `RunCompute` per trained stage run."""
    names = {"semantic": ("semantic LM", "semantic_lm"), "coarse": ("coarse LM", "coarse_lm"), "fine": ("fine LM", "fine_lm"),
             "soundstorm": ("SoundStorm", "soundstorm")}  # model.lms key -> (row name, PipelineConfig field)
    runs = [("codec", pipeline.codec, model.codec)]
    runs += [(names[key][0], getattr(pipeline, names[key][1]), module) for key, module in model.lms.items() if key in names]
    if acoustic_only is not None:
        runs.append(("acoustic-only coarse LM", str(acoustic_only.coarse_lm.path), acoustic_only.lms["coarse"]))
    if detector:
        runs.append(("detector", detector, None))
    return [run_compute(stage, Path(path), _parameters(module)) for stage, path, module in runs if path]


def write_results(out_dir: Path, rows: list[ResultRow], compute: list[RunCompute], setting: str) -> Path:
    """`out_dir`/results.md (atomic); returns its path."""
    from audiolm_pl.fileio import atomic_write_text

    path = Path(out_dir) / "results.md"
    atomic_write_text(path, results_markdown("audiolm_pl results beside the paper's", rows, compute, setting))
    return path
