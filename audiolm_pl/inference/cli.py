"""`audiolm-pl generate`: run the composite AudioLM from a pipeline YAML and write wavs + spectrograms
(`inference.generate.generate_files`). `audiolm-pl export`: the pipeline's stages as one folder
(`AudioLM.save_pretrained`) that `AudioLM.from_pretrained` loads.

Arguments are checked before any model loads (a bad `--seconds`, a missing prompt or an `--out` that cannot be
written is one line and exit code 2, never a traceback after minutes of work), and each wav is written under a
temporary name and renamed when whole, so finished audio is never lost or left half-written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from audiolm_pl.inference.generate import TASKS, audio_format

LONGEST_SECONDS = 120.0  # one generation runs token by token (minutes on a CPU): longer needs --allow-long


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
    parser.add_argument("--acoustic-only", action="store_true",
                        help="the acoustic-only ablation: no semantic stage; give an acoustic-only coarse LM "
                             "(layout=acoustic_only) as the override coarse_lm=RUN (docs/lm.md)")
    parser.add_argument("--allow-long", action="store_true",
                        help=f"allow --seconds above {LONGEST_SECONDS:.0f} (minutes of CPU/GPU time; a progress bar per stage)")
    parser.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. sampling.coarse.temperature=0.9")
    parser.set_defaults(func=_run)
    _add_export(subparsers)


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a pipeline's stages (coarse + fine or SoundStorm) as one folder that AudioLM.from_pretrained loads",
        description="Weights as safetensors, settings as JSON, a pipeline.yaml naming the stage folders (docs/inference.md).",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline YAML naming a checkpoint per stage (<workdir>/pipeline.yaml)")
    parser.add_argument("out", type=Path, help="folder to write (new or empty; an earlier export with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    parser.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. sampling.coarse.temperature=0.9")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from audiolm_pl.inference.audiolm import AudioLM
    from audiolm_pl.pretrained import check_target

    check_target(args.out, args.overwrite)  # before minutes of loading
    model = AudioLM.from_config(args.pipeline, overrides=tuple(args.overrides))
    folder = model.save_pretrained(args.out, overwrite=args.overwrite)
    print(f"wrote {folder}: load it with AudioLM.from_pretrained({str(folder)!r})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from audiolm_pl.config import load_config
    from audiolm_pl.inference.audiolm import AudioLM, PipelineConfig
    from audiolm_pl.inference.generate import generate_files

    check_arguments(args)
    config = load_config(PipelineConfig, args.pipeline, overrides=args.overrides)
    if args.acoustic_only:
        config.semantic_lm = ""  # not loaded: the semantic stage is what the ablation leaves out
    model = AudioLM.from_config(config)  # refuses a coarse LM that reads semantic ids when there is no semantic LM
    written = generate_files(model, args.task, args.out, prompt=args.prompt, seconds=args.seconds,
                             num_samples=args.num_samples, seed=args.seed,
                             prompt_seconds=args.prompt_seconds or config.prompt_seconds, progress=True)
    for file in written:
        print(f"wrote {file.path} ({file.seconds:.2f} s) and {file.spectrogram}")
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Every mistake in the arguments as a `ValueError` / `FileNotFoundError` (one line, exit 2), before any work."""
    import soundfile

    if args.task != "acoustic":
        if not args.seconds > 0:
            raise ValueError(f"--seconds must be > 0; got {args.seconds:g}")
        if args.seconds > LONGEST_SECONDS and not args.allow_long:
            raise ValueError(f"--seconds {args.seconds:g} is over {LONGEST_SECONDS:.0f} s, which runs token by token for "
                             "many minutes; pass --allow-long to run it anyway")
    if args.acoustic_only and args.task == "acoustic":
        raise ValueError("--acoustic-only generates without semantic ids; --task acoustic is made from them")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1; got {args.num_samples}")
    if args.prompt_seconds is not None and not args.prompt_seconds > 0:
        raise ValueError(f"--prompt-seconds must be > 0; got {args.prompt_seconds:g}")
    if args.task != "unconditional":
        if args.prompt is None:
            raise FileNotFoundError(f"--task {args.task} needs --prompt IN.wav")
        if not args.prompt.is_file():
            raise FileNotFoundError(f"--prompt {args.prompt} does not exist or is not a file")
    _check_writable(args.out)
    if audio_format(args.out) not in soundfile.available_formats():
        raise ValueError(f"--out {args.out}: name an audio file (.wav, .flac, .ogg); soundfile cannot write "
                         f"{args.out.suffix or 'a file without a suffix'}")


def _check_writable(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; name a file such as {out / 'generated.wav'}")
    folder = out.parent
    while not folder.exists():  # the nearest existing folder is where the missing ones will be made
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {folder} (permission denied)")
