"""`audiolm-pl detector-shards` (the synthetic training set) and `audiolm-pl detect CKPT FILES...`.

    audiolm-pl detector-shards shards/detector/val --codec runs/codec --real shards/speech/val
    audiolm-pl train detector --config small
    audiolm-pl detect runs/detector a.wav b.flac        # one line per file: PATH<TAB>P(synthetic)

Training is the registry's `detector` stage (`audiolm-pl train detector`, jobs/cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers) -> None:
    _add_shards(subparsers)
    _add_detect(subparsers)


def _add_shards(subparsers) -> None:
    parser = subparsers.add_parser(
        "detector-shards", help="synthetic audio shards for the detector: codec resynthesis and/or generated wavs",
        description="OUT/codec: every sample of --real through the codec (encode + decode). OUT/generated: every "
                    "audio file under --generated, less its first --skip-seconds (a continuation's real prompt).",
    )
    parser.add_argument("out", type=Path, help="output folder (codec/ and generated/ are written inside)")
    parser.add_argument("--codec", help="codec checkpoint or run directory (with --real)")
    parser.add_argument("--real", help="real audio shards to resynthesize (directory, brace pattern or glob)")
    parser.add_argument("--num-quantizers", type=int, default=None, help="RVQ levels decoded (default: all)")
    parser.add_argument("--generated", type=Path, help="folder of generated audio files")
    parser.add_argument("--skip-seconds", type=float, default=0.0,
                        help="seconds cut from the start of each generated file (the prompt of a continuation)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate of the generated shards (default 16000)")
    parser.set_defaults(func=_run_shards)


def _run_shards(args: argparse.Namespace) -> int:
    if (args.codec is None) != (args.real is None):
        raise ValueError("--codec and --real go together (the codec resynthesizes the real shards)")
    if args.codec is None and args.generated is None:
        raise ValueError("give --codec CKPT --real SHARDS, --generated FOLDER, or both")
    if args.skip_seconds < 0:
        raise ValueError(f"--skip-seconds must be >= 0; got {args.skip_seconds:g}")
    from audiolm_pl.detector.shards import generated_shards, resynthesize_shards

    if args.codec is not None:
        from audiolm_pl.checkpoint import resolve_checkpoint_path
        from audiolm_pl.codec import codec_hash, is_hf_codec, load_codec

        path = args.codec if is_hf_codec(args.codec) else resolve_checkpoint_path(args.codec)
        report = resynthesize_shards(load_codec(path), args.real, args.out / "codec", codec_hash(path),
                                     args.num_quantizers)
        print(f"detector-shards: {report.samples} codec resyntheses in {report.out_dir} "
              f"({report.shards_written} shards written, {report.shards_skipped} already there)")
    if args.generated is not None:
        report = generated_shards(args.generated, args.out / "generated", args.sample_rate, args.skip_seconds)
        print(f"detector-shards: {report.samples} generated clips in {report.out_dir}")
    return 0


def _add_detect(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect", help="P(synthetic) per audio file, by a trained detector (audiolm-pl train detector)",
        description="Prints one line per file: PATH<TAB>probability that our codec or our generation made it. "
                    "It detects our codec, not every codec or generator (docs/detector.md).",
    )
    parser.add_argument("checkpoint", help="detector checkpoint or run directory")
    parser.add_argument("files", nargs="+", type=Path, help="audio files (any rate; resampled)")
    parser.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no such audio file: {', '.join(missing)}")
    for path, probability in detect_files(args.checkpoint, args.files):
        print(f"{path}\t{probability:.4f}")
    return 0


def detect_files(checkpoint: str | Path, files: list[Path]) -> list[tuple[Path, float]]:
    """(file, P(synthetic)) for each audio file, in order, by the detector at `checkpoint`."""
    import torch

    from audiolm_pl.data.audio import load_mono
    from audiolm_pl.detector.lightning import file_probability, load_detector

    detector = load_detector(checkpoint)
    rate = detector.model.sample_rate
    return [(path, file_probability(detector, torch.from_numpy(load_mono(path, rate)))) for path in files]
