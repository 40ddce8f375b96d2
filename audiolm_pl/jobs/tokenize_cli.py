"""`audiolm-pl tokenize --codec CKPT --semantic TOKENIZER IN_SHARDS OUT_SHARDS`: audio shards -> token shards."""

from __future__ import annotations

import argparse


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="run the codec and the semantic tokenizer over audio shards, writing token shards",
        description="Audio shards -> token shards (semantic.npy, acoustic.npy, json) + manifest.json. "
        "Resumable: finished shards are skipped. Refuses an output directory made by other checkpoints.",
    )
    parser.add_argument("--codec", required=True, help="codec checkpoint or run directory (audiolm-pl train codec)")
    parser.add_argument("--semantic", required=True, help="semantic tokenizer file (audiolm-pl semantic kmeans)")
    parser.add_argument("in_shards", help="audio shard directory, brace pattern or glob")
    parser.add_argument("out_shards", help="output directory for tokens-%%06d.tar + manifest.json")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    parser.add_argument("--trainer", default="cpu", help="trainer preset under conf/trainer/ (cpu, ddp) or a YAML path")
    parser.set_defaults(func=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    from audiolm_pl.checkpoint import file_hash, resolve_checkpoint_path
    from audiolm_pl.codec import load_codec
    from audiolm_pl.config import load_config, resolve_config_path
    from audiolm_pl.semantic import load_tokenizer
    from audiolm_pl.jobs.tokenize_shards import tokenize_shards
    from audiolm_pl.training import TrainerConfig

    preset = load_config(TrainerConfig, resolve_config_path("trainer", args.trainer))
    trainer_kwargs = {"accelerator": preset.accelerator, "devices": preset.devices, "num_nodes": preset.num_nodes,
                      "strategy": preset.strategy, "precision": "32-true"}  # codes must not depend on bf16 rounding
    codec_path = resolve_checkpoint_path(args.codec)
    report = tokenize_shards(
        load_codec(codec_path),
        load_tokenizer(args.semantic),
        args.in_shards,
        args.out_shards,
        codec_hash=file_hash(codec_path),
        semantic_hash=file_hash(args.semantic),
        batch_size=args.batch_size,
        trainer_kwargs=trainer_kwargs,
    )
    print(f"tokenize: {report.shards_written} shards written, {report.shards_skipped} already there; "
          f"{report.samples} samples, {report.hours:.3f} h in {report.out_dir}")
    return 0
