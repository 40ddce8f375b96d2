"""Clean English sentences for the TTS corpus, from Debian's `fortunes` files (offline)."""

from __future__ import annotations

import random
import re
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,;:'\-]*[A-Za-z][.!?]$")


def split_sentences(text: str, min_words: int = 4, max_words: int = 20) -> list[str]:
    """Fortune text -> single clean sentences: plain ASCII words and punctuation, 4-20 words.

    Attributions (`-- Author`), quotes, digits, URLs and odd symbols are dropped, so every
    sentence is something a TTS engine reads as plain words.
    """
    sentences = []
    for chunk in text.split("%"):
        chunk = chunk.split("\t\t--")[0].split(" -- ")[0]
        chunk = " ".join(chunk.split())  # fold line breaks and runs of spaces
        for sentence in _SENTENCE_END.split(chunk):
            sentence = sentence.strip().strip('"')
            if _CLEAN.match(sentence) and min_words <= len(sentence.split()) <= max_words:
                sentences.append(sentence)
    return sentences


def load_sentences(seed: int, directory: Path = FORTUNES_DIR) -> list[str]:
    """Every clean sentence of the fortunes files, deduplicated, in a seeded shuffled order."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} not found: install the Debian package 'fortunes' (bash scripts/install_system_deps.sh)"
        )
    sentences: dict[str, None] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.suffix:  # 'art', not 'art.dat' / 'art.u8'
            for sentence in split_sentences(path.read_text(encoding="latin-1")):
                sentences.setdefault(sentence)
    ordered = sorted(sentences)
    random.Random(seed).shuffle(ordered)
    return ordered
