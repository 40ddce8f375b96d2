"""`audiolm-pl eval`: a pipeline on held-out utterances of audio shards, with offline judges."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiolm_pl.cli import comma_list
from audiolm_pl.evaluation.runner import SECTIONS, EvalConfig


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="codec round trip, acoustic generation and continuation figures on held-out speakers, with real judges",
        description="Writes OUT/eval.json, OUT/report.md, OUT/results.md (ours beside the paper's figures, with the "
                    "compute behind ours) and OUT/continuations/*.wav (+ a spectrogram PNG beside each). "
                    "The judges need the eval extra: pip install -e \".[eval]\"",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline YAML naming a checkpoint per stage")
    parser.add_argument("--shards", required=True, help="held-out audio shards: a directory of *.tar, a glob or one tar")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: eval/ beside the pipeline YAML)")
    parser.add_argument("--per-speaker", type=int, default=EvalConfig.per_speaker, help="utterances per speaker")
    parser.add_argument("--prompt-seconds", type=float, default=EvalConfig.prompt_seconds)
    parser.add_argument("--seconds", type=float, default=EvalConfig.seconds, help="continuation length")
    parser.add_argument("--asr", type=comma_list, default=["whisper", "sphinx"], help="comma-separated: whisper, sphinx, hf:DIR")
    parser.add_argument("--speaker", default=EvalConfig.speaker, help="resemblyzer | xvector:DIR | mfcc")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS")
    parser.add_argument("--sections", type=comma_list, default=list(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size, help="prompts per continue_audio call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--music", action="store_true",
                        help="music (piano): codec quality per bitrate and the continuations' onset rate and pitch-class "
                             "histogram against their prompt's; no speech judge (--asr, --speaker, --no-dnsmos unused)")
    parser.add_argument("--acoustic-only-coarse", default="", metavar="RUN",
                        help="an acoustic-only coarse LM (layout=acoustic_only): its continuations of the same prompts are "
                             "judged beside the full pipeline's")
    parser.add_argument("--detector", default="", metavar="CKPT",
                        help="a detector checkpoint or run (train detector): its accuracy on the held-out audio, its codec "
                             "round trips and the continuations")
    parser.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. sampling.coarse.temperature=0.9")
    parser.set_defaults(func=_run)


def evaluate_pipeline_files(pipeline: str | Path, shards: str | Path, config: EvalConfig, out: Path,
                            overrides: tuple[str, ...] = ()):
    """A pipeline YAML judged on held-out utterances of `shards` -> `EvalReport` (`MusicReport` with `config.music`);
    writes `out`/eval.json, report.md, results.md and continuations/. Raises `MissingEvalPackage` when a judge's
    package is not installed."""
    from audiolm_pl.config import load_config
    from audiolm_pl.evaluation.results_table import music_rows, pipeline_compute, speech_rows, write_results
    from audiolm_pl.evaluation.runner import evaluate_pipeline
    from audiolm_pl.evaluation.selection import load_eval_utterances
    from audiolm_pl.inference.audiolm import AudioLM, PipelineConfig
    from audiolm_pl.semantic.corpus import shard_files

    shard_files(shards)  # a missing shard directory fails before anything loads
    pipeline_config = load_config(PipelineConfig, pipeline, overrides=overrides)
    model = AudioLM.from_config(pipeline_config)
    utterances = load_eval_utterances(shards, model.sample_rate, config.per_speaker, config.min_utterance_seconds, config.seed)
    ablation = _acoustic_only_model(pipeline_config, config.acoustic_only_coarse) if config.acoustic_only_coarse else None
    if config.music:
        from audiolm_pl.evaluation.music_eval import evaluate_music

        report = evaluate_music(model, utterances, config, out_dir=out)
        rows = music_rows(report)
    else:
        report = evaluate_pipeline(model, utterances, config, out_dir=out, **({"acoustic_only": ablation} if ablation else {}))
        rows = speech_rows(report)
    setting = (f"`audiolm-pl eval --pipeline {pipeline} --shards {shards}`: {len(utterances)} held-out "
               f"{'works' if config.music else 'utterances'}, prompts {config.prompt_seconds:g} s, continuations "
               f"{config.seconds:g} s, seed {config.seed}.")
    write_results(out, rows, pipeline_compute(pipeline_config, model, ablation, config.detector), setting)
    return report


def _acoustic_only_model(pipeline_config, coarse_lm: str):
    """The same pipeline with `coarse_lm` (acoustic-only) in place of its coarse LM and no semantic LM."""
    from dataclasses import replace

    from audiolm_pl.inference.audiolm import AudioLM

    return AudioLM.from_config(replace(pipeline_config, coarse_lm=coarse_lm, semantic_lm=""))


def _run(args: argparse.Namespace) -> int:
    from audiolm_pl.evaluation.packages import MissingEvalPackage

    config = EvalConfig(per_speaker=args.per_speaker, prompt_seconds=args.prompt_seconds, seconds=args.seconds,
                        asr=args.asr, speaker=args.speaker, dnsmos=not args.no_dnsmos, sections=args.sections,
                        batch_size=args.batch_size, seed=args.seed, music=args.music,
                        acoustic_only_coarse=args.acoustic_only_coarse, detector=args.detector)
    out = args.out or Path(args.pipeline).parent / "eval"
    try:
        report = evaluate_pipeline_files(args.pipeline, args.shards, config, out, tuple(args.overrides or ()))
    except MissingEvalPackage as err:
        print(f"audiolm-pl eval: error: {err}", file=sys.stderr)
        return 2
    if config.music:
        print(f"wrote {out / 'eval.json'}, {out / 'report.md'}, {out / 'results.md'} and {len(report.files)} continuations "
              f"in {report.wall_seconds['total']:.1f} s")
        return 0
    for target in report.targets:
        verdict = {True: "pass", False: "FAIL", None: "-"}[target.passed]
        figure = "n/a" if target.figure is None else f"{target.figure:.3f}"
        print(f"{verdict:>4}  {target.name}: {figure} ({target.requirement})")
    print(f"wrote {out / 'eval.json'}, {out / 'report.md'}, {out / 'results.md'} and {len(report.continuation.files) if report.continuation else 0} "
          f"continuations in {report.wall_seconds['total']:.1f} s")
    return 0
