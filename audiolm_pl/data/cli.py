"""`audiolm-pl data ...`: build the embedded corpus and turn audio folders into shards."""

from __future__ import annotations


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("data", help="make corpora and WebDataset audio shards")
    data_commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    # Each module owns its sub-command's arguments; imports stay light (no torch at import).
    from audiolm_pl.corpus import piano, real, speech
    from audiolm_pl.data import shards

    shards.add_command(data_commands)
    speech.add_command(data_commands)
    piano.add_command(data_commands)
    real.add_command(data_commands)
