"""`audiolm-pl data ...`: build the embedded corpus and turn audio folders into shards."""

from __future__ import annotations


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("data", help="make corpora and WebDataset audio shards")
    data_commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    # Each module owns its sub-command's arguments; imports stay light (no torch at import).
    from audiolm_pl.data import corpus_piano, corpus_real, corpus_speech, shards

    shards.add_command(data_commands)
    corpus_speech.add_command(data_commands)
    corpus_piano.add_command(data_commands)
    corpus_real.add_command(data_commands)
