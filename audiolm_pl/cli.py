"""`audiolm-pl` (also `python -m audiolm_pl`): one entry point, one sub-command per job.

Each area of the package contributes its sub-commands through an `add_commands(subparsers)`
function in its own `cli` module, listed in `COMMAND_MODULES`; a parsed command runs the
function stored as `func` in its namespace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

COMMAND_MODULES = (
    "audiolm_pl.data.cli",  # data shards | speech | piano
    "audiolm_pl.codec.cli",  # codec roundtrip | encode | decode
    "audiolm_pl.semantic.cli",
    "audiolm_pl.jobs.tokenize_cli",
    "audiolm_pl.inference.cli",  # generate
    "audiolm_pl.evaluation.cli",  # eval
    "audiolm_pl.jobs.main",  # main
)


def add_train_command(subparsers) -> None:
    from audiolm_pl.registry import STAGES

    parser = subparsers.add_parser(
        "train",
        help="train one stage (codec, ssl, semantic, coarse, fine)",
        description="Train one stage with Lightning. Overrides are dotted keys: trainer.max_steps=100 model.dim=64",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    parser.add_argument("--config", default="tiny", help="a name under conf/<stage>/ (tiny, small, paper) or a YAML path")
    parser.add_argument("--trainer", default=None, help="a trainer preset under conf/trainer/ (cpu, ddp, fsdp) or a YAML path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from audiolm_pl.training import load_stage_config, train_stage

    run_config = load_stage_config(args.stage, args.config, args.trainer, args.overrides)
    directory = train_stage(args.stage, run_config)
    print(f"{args.stage}: run directory {directory} (checkpoint {directory / 'checkpoints' / 'last.ckpt'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiolm-pl",
        description="AudioLM as a PyTorch Lightning pipeline: data, codec, semantic tokens, three LMs, generation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_command(subparsers)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # dotted overrides may follow options (`train codec --config tiny trainer.max_steps=5`), which
    # argparse's positional matching does not allow: collect them here
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(word.startswith("-") or "=" not in word for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # user errors (bad config keys, files, specs, values) end with a message and exit code 2;
    # anything else is a bug and keeps its traceback
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as err:  # ConfigError, CheckpointError, TokenSpecMismatch are ValueErrors
        print(f"audiolm-pl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
