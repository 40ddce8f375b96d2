"""Text normalisation for WER/CER, and pooled WER/CER (torchmetrics).

`normalize_text`: Unicode NFKC, lowercase, curly apostrophes made straight; numbers written in
digits become English words (cardinals "1,250" -> "one thousand two hundred fifty", decimals
"3.5" -> "three point five", ordinals "21st" -> "twenty first", "%" -> "percent"), so "3" and
"three" match; every other punctuation mark becomes a space, apostrophes are kept only inside a
word ("don't", "o'clock"); whitespace is collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
             "twelve": "twelfth"}
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:,\d{3})*)(?:\.(\d+))?(st|nd|rd|th)?(%)?(?!\w)")


def number_words(n: int) -> str:
    """0 <= n -> English words without "and" or hyphens: 121 -> "one hundred twenty one"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    *head, last = words.split(" ")
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _spell_number(match: re.Match) -> str:
    integer, decimals, ordinal, percent = match.groups()
    words = number_words(int(integer.replace(",", "")))
    if decimals:
        words += " point " + " ".join(_ONES[int(digit)] for digit in decimals)
    elif ordinal:
        words = _ordinal(words)
    return f" {words}{' percent' if percent else ''} "


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\u2018\u2019\u02bc`]", "'", text)
    text = _NUMBER.sub(_spell_number, text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside a word
    return " ".join(text.split())


@dataclass
class ErrorRates:
    """WER/CER pooled over utterances: all edits / all reference words (or characters)."""

    wer: float
    cer: float
    utterances: int
    reference_words: int


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> ErrorRates | None:
    """Normalised hypotheses vs references, pairs with an empty normalised reference left out; None if none remain."""
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    pairs = [(normalize_text(h), normalize_text(r)) for h, r in zip(hypotheses, references, strict=True)]
    pairs = [(h, r) for h, r in pairs if r]
    if not pairs:
        return None
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    return ErrorRates(float(word_error_rate(hyps, refs)), float(char_error_rate(hyps, refs)), len(pairs),
                      sum(len(r.split()) for r in refs))
