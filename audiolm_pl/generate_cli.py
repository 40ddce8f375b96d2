"""`audiolm-pl generate`: run the composite AudioLM from a pipeline YAML and write wavs + spectrograms."""

from __future__ import annotations

import argparse
from pathlib import Path

TASKS = ("continue", "acoustic", "unconditional")


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate audio with the chained stages (continuation, new acoustics, unconditional)",
        description="Writes OUT.wav (or OUT-<i>.wav for several samples) and a spectrogram PNG beside each.",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline YAML naming a checkpoint per stage")
    parser.add_argument("--prompt", type=Path, help="prompt audio (continue: its first --prompt-seconds; acoustic: the source)")
    parser.add_argument("--seconds", type=float, default=7.0, help="seconds to generate (continue, unconditional)")
    parser.add_argument("--out", type=Path, required=True, help="output wav path")
    parser.add_argument("--task", choices=TASKS, default="continue")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--prompt-seconds", type=float, default=None, help="default: the pipeline's prompt_seconds (3)")
    parser.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. sampling.coarse.temperature=0.9")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import soundfile

    from audiolm_pl.config import load_config
    from audiolm_pl.data.audio import load_mono
    from audiolm_pl.pipeline import AudioLM, PipelineConfig
    from audiolm_pl.plotting import save_spectrogram_png

    config = load_config(PipelineConfig, args.pipeline, overrides=args.overrides)
    model = AudioLM.from_config(config)
    if args.task != "unconditional" and args.prompt is None:
        raise FileNotFoundError(f"--task {args.task} needs --prompt IN.wav")
    if args.task == "continue":
        import torch

        prompt_seconds = args.prompt_seconds or config.prompt_seconds
        prompt = torch.from_numpy(load_mono(args.prompt, model.sample_rate))[: int(prompt_seconds * model.sample_rate)]
        result = model.continue_audio(prompt, args.seconds, args.num_samples, args.seed)
    elif args.task == "acoustic":
        import torch

        source = torch.from_numpy(load_mono(args.prompt, model.sample_rate))
        result = model.generate_acoustics(wav=source, num_samples=args.num_samples, seed=args.seed)
    else:
        result = model.generate_unconditional(args.seconds, args.num_samples, args.seed)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    prompt_marker = result.prompt_samples / model.sample_rate or None
    for index, wav in enumerate(result.wav.cpu()):
        path = args.out if args.num_samples == 1 else args.out.with_name(f"{args.out.stem}-{index}{args.out.suffix}")
        soundfile.write(path, wav.numpy(), model.sample_rate)
        save_spectrogram_png(wav, model.sample_rate, path.with_suffix(".png"), title=f"{args.task}: {path.name}",
                             prompt_seconds=prompt_marker)
        print(f"wrote {path} ({len(wav) / model.sample_rate:.2f} s) and {path.with_suffix('.png')}")
    return 0
