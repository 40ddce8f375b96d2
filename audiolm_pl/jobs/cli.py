"""`audiolm-pl train | tokenize | main`: the jobs that drive the stages.

    audiolm-pl train coarse --config small --trainer cpu trainer.max_steps=500
    audiolm-pl tokenize --codec runs/codec --semantic runs/semantic/whisper.safetensors shards/speech/train tokens/speech/train
    audiolm-pl main speech_hours=2 codec_minutes=20

Each command calls a library function: `training.train_stage` (the main job calls `fit_stage`, the same
training that also returns its figures), `tokenize_with_checkpoints` below (the main job calls it too),
`jobs.main.run_main_job`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers) -> None:
    _add_train(subparsers)
    _add_tokenize(subparsers)
    _add_main(subparsers)
    _add_checkpoint(subparsers)


# -- train ---------------------------------------------------------------------------------


def _add_train(subparsers) -> None:
    from audiolm_pl.registry import STAGES

    parser = subparsers.add_parser(
        "train",
        help="train one stage (codec, ssl, semantic, coarse, fine)",
        description="Train one stage with Lightning. Overrides are dotted keys: trainer.max_steps=100 model.dim=64",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    parser.add_argument("--config", default="tiny", help="a name under conf/<stage>/ (tiny, small, paper) or a YAML path")
    parser.add_argument("--trainer", default=None,
                        help="a trainer preset under conf/trainer/ (cpu, ddp, ddp_cpu, fsdp, fsdp_cpu) or a YAML path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from audiolm_pl.training import load_stage_config, train_stage

    run_config = load_stage_config(args.stage, args.config, args.trainer, args.overrides)
    directory = train_stage(args.stage, run_config)
    print(f"{args.stage}: run directory {directory} (checkpoint {directory / 'checkpoints' / 'last.ckpt'})")
    return 0


# -- tokenize ------------------------------------------------------------------------------


def _add_tokenize(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="run the codec and the semantic tokenizer over audio shards, writing token shards",
        description="Audio shards -> token shards (semantic.npy, acoustic.npy, json) + manifest.json. "
        "Resumable: finished shards are skipped. Refuses an output directory made by other checkpoints.",
    )
    parser.add_argument("--codec", required=True, help="codec checkpoint or run directory (audiolm-pl train codec), "
                        "or hf:DIR[?num_quantizers=N] for a pretrained transformers codec folder (docs/codec.md)")
    parser.add_argument("--semantic", required=True, help="semantic tokenizer file (audiolm-pl semantic kmeans)")
    parser.add_argument("in_shards", help="audio shard directory, brace pattern or glob")
    parser.add_argument("out_shards", help="output directory for tokens-%%06d.tar + manifest.json")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    parser.add_argument("--trainer", default="cpu", help="trainer preset under conf/trainer/ (cpu, ddp) or a YAML path")
    parser.set_defaults(func=_run_tokenize)


def tokenize_with_checkpoints(codec: str | Path, semantic: str | Path, in_shards: str | Path, out_shards: str | Path,
                              batch_size: int = 8, trainer: str | Path = "cpu"):
    """Audio shards -> token shards with the codec (checkpoint or run directory) and the semantic tokenizer file
    that `codec` and `semantic` name; `trainer` is a preset under conf/trainer/ or a YAML path. Returns
    `TokenizeReport` (jobs/tokenize_shards.py)."""
    from audiolm_pl.checkpoint import file_hash, resolve_checkpoint_path
    from audiolm_pl.codec import codec_hash, is_hf_codec, load_codec
    from audiolm_pl.config import load_config, resolve_config_path
    from audiolm_pl.jobs.tokenize_shards import tokenize_shards
    from audiolm_pl.semantic import load_tokenizer
    from audiolm_pl.training import TrainerConfig

    preset = load_config(TrainerConfig, resolve_config_path("trainer", trainer))
    trainer_kwargs = {"accelerator": preset.accelerator, "devices": preset.devices, "num_nodes": preset.num_nodes,
                      "strategy": preset.strategy, "precision": "32-true"}  # codes must not depend on bf16 rounding
    from audiolm_pl.pretrained import folder_hash, is_pretrained_folder, tokenizer_file

    codec_path = codec if is_hf_codec(codec) or is_pretrained_folder(codec) else resolve_checkpoint_path(codec)
    return tokenize_shards(
        load_codec(codec_path),
        load_tokenizer(tokenizer_file(semantic)),
        str(in_shards),
        str(out_shards),
        codec_hash=codec_hash(codec_path),
        semantic_hash=folder_hash(semantic) if is_pretrained_folder(semantic) else file_hash(semantic),
        batch_size=batch_size,
        trainer_kwargs=trainer_kwargs,
    )


def _run_tokenize(args: argparse.Namespace) -> int:
    report = tokenize_with_checkpoints(args.codec, args.semantic, args.in_shards, args.out_shards,
                                       batch_size=args.batch_size, trainer=args.trainer)
    print(f"tokenize: {report.shards_written} shards written, {report.shards_skipped} already there; "
          f"{report.samples} samples, {report.hours:.3f} h in {report.out_dir}")
    return 0


# -- main ----------------------------------------------------------------------------------


def _add_main(subparsers) -> None:
    parser = subparsers.add_parser(
        "main", help="the whole pipeline on the embedded default corpus (corpus, shards, every stage, generation)",
        description="Runs every step not yet done under workdir (resumable). Keys of MainJobConfig as overrides: "
                    "speech_hours=5 codec_minutes=60 semantic_source=ssl real_speech=[].",
    )
    parser.add_argument("overrides", nargs="*", help="MainJobConfig overrides, e.g. speech_hours=2 codec_minutes=20")
    parser.set_defaults(func=_run_main)


def _run_main(args: argparse.Namespace) -> int:
    from audiolm_pl.config import load_config
    from audiolm_pl.jobs.main import MainJobConfig, run_main_job

    config = load_config(MainJobConfig, overrides=args.overrides)
    report = run_main_job(config)
    total = sum(step["seconds"] for step in report["steps"].values()) / 60
    print(f"main job done in {total:.1f} min of step time; report: {config.root / 'report.md'}")
    return 0


# -- checkpoint ----------------------------------------------------------------------------


def _add_checkpoint(subparsers) -> None:
    parser = subparsers.add_parser("checkpoint", help="checkpoint tools (consolidate an FSDP run's sharded checkpoint)")
    actions = parser.add_subparsers(dest="action", required=True)
    consolidate = actions.add_parser(
        "consolidate",
        help="sharded checkpoint (or run directory) -> one consolidated.ckpt that inference reads",
        description="Gather an FSDP run's sharded checkpoints/last.ckpt (a directory) into "
                    "checkpoints/consolidated.ckpt: the single file load_lm, tokenize and AudioLM read.",
    )
    consolidate.add_argument("path", help="a run directory or a sharded checkpoint directory")
    consolidate.add_argument("--output", default=None, help="where to write (default: consolidated.ckpt beside it)")
    consolidate.set_defaults(func=_run_consolidate)


def _run_consolidate(args: argparse.Namespace) -> int:
    from audiolm_pl.checkpoint import consolidate

    print(f"consolidated checkpoint: {consolidate(args.path, args.output)}")
    return 0
