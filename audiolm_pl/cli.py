"""`audiolm-pl` (also `python -m audiolm_pl`): one entry point, one sub-command per job.

This module only builds the parser and dispatches. Every sub-command comes from the `cli` module of
the package that does the work, listed in `COMMAND_MODULES`: its `add_commands(subparsers)` adds the
sub-command's parser and stores the function that runs it as `func` (`set_defaults(func=...)`); `main`
parses and calls `args.func(args)`. Command functions call library functions that jobs and notebooks
call too (`training.fit_stage`, `semantic.cli.fit_kmeans`, `inference.generate.generate_files`, ...)
and import them inside the function, so a `cli` module adds no heavy import to building the parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

COMMAND_MODULES = (
    "audiolm_pl.data.cli",  # data shards | speech | piano | real
    "audiolm_pl.codec.cli",  # codec roundtrip | encode | decode
    "audiolm_pl.semantic.cli",  # semantic kmeans | encode | measure
    "audiolm_pl.jobs.cli",  # train | tokenize | main
    "audiolm_pl.inference.cli",  # generate
    "audiolm_pl.evaluation.cli",  # eval
    "audiolm_pl.detector.cli",  # detector-shards | detect
)


def comma_list(text: str) -> list[str]:
    """'whisper, sphinx,' -> ['whisper', 'sphinx']: an argument holding a comma-separated list (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiolm-pl",
        description="AudioLM as a PyTorch Lightning pipeline: data, codec, semantic tokens, three LMs, generation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
