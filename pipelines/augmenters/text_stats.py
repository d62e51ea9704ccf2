"""text_stats: character, word and sentence counts of a text column."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.re2 import re2_class
from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

# RE2 patterns (Arrow's regex engine), where \w and \s are ASCII only: spell Unicode classes out.
_WORD_CHAR, _LETTER_OR_DIGIT, _DIGIT = r"[\p{L}\p{M}\p{N}_]", r"[\p{L}\p{N}]", r"\p{N}"
_CLASSES = (_WORD_CHAR, _LETTER_OR_DIGIT, _DIGIT)


def _word(word_char: str, digit: str) -> str:
    """don't, state-of-the-art, 3.14 and 1,000: one word each."""
    return f"{word_char}+(?:['’-]{word_char}+|[.,]{digit}+)*"


def _sentence(letter_or_digit: str) -> str:
    """A stretch between ends with a letter or digit in it."""
    return rf"[^\x1e]*{letter_or_digit}[^\x1e]*"


_WORD = _word(_WORD_CHAR, _DIGIT)
_SENTENCE_END = r"[.!?…]+(?:[\s\p{Z}]+|$)|[。！？]+"  # "3.14" or "e.g" do not end a sentence
_SENTENCE = _sentence(_LETTER_OR_DIGIT)

# RE2 compiles \p{L} and its like anew on every kernel call: milliseconds, most of the cost of a
# request's one record. A small batch gets the same patterns with each class cut down to ASCII and
# the characters its text holds (a few ranges compile in microseconds); on that text the two match
# alike, as a class only ever tests the characters it meets. Which characters are in a class is
# RE2's own answer, learnt per block of code points, once per process.
_NARROW_ROWS = 512
_BLOCK = 256
_SURROGATES = range(0xD800, 0xE000)
_ASCII = frozenset(map(chr, range(128)))
_members: dict[int, tuple[frozenset[str], ...]] = {}  # block -> its characters in each of _CLASSES
_PRELEARNT = range(0x3000 // _BLOCK)  # up to CJK: the alphabets, general punctuation (’ …)
# The patterns of the last texts' characters beyond ASCII (most texts have none, or a few): writing
# the classes out took a fifth of the step on one record.
_narrowed: dict[frozenset[str], tuple[str, str]] = {}
_NARROWED_KEPT = 1024


def _learn(blocks: set[int]) -> None:
    """Which characters of these blocks RE2 puts in each of _CLASSES: one kernel call per class."""
    chars = pa.array([chr(c) for b in sorted(blocks) for c in range(b * _BLOCK, (b + 1) * _BLOCK)
                      if c not in _SURROGATES], pa.string())
    found = [set(chars.filter(pc.match_substring_regex(chars, f"^{cls}$")).to_pylist()) for cls in _CLASSES]
    for block in blocks:
        _members[block] = tuple(frozenset(c for c in members if ord(c) // _BLOCK == block) for members in found)


def _class(chars: Iterable[str]) -> str:
    """An RE2 class of exactly these characters (never none: ASCII has letters and digits)."""
    return re2_class(map(ord, chars))


def narrowed(texts: Iterable[str | None]) -> tuple[str, str]:
    """(_WORD, _SENTENCE) with their classes cut down to ASCII (which holds the space and \\x1e
    that marking sentence ends adds) and the characters of `texts`: on those texts, and on the
    texts marked, they match as the originals."""
    beyond_ascii = frozenset().union(*(text for text in texts if text)) - _ASCII
    if (patterns := _narrowed.get(beyond_ascii)) is None:
        if len(_narrowed) >= _NARROWED_KEPT:
            _narrowed.clear()
        patterns = _narrowed[beyond_ascii] = _narrowed_to(_ASCII | beyond_ascii)
    return patterns


def _narrowed_to(chars: frozenset[str]) -> tuple[str, str]:
    missing = {ord(c) // _BLOCK for c in chars} - _members.keys()
    if missing:
        _learn(missing)
    word_char, letter_or_digit, digit = (
        _class(c for c in chars if c in _members[ord(c) // _BLOCK][i]) for i in range(len(_CLASSES))
    )
    return _word(word_char, digit), _sentence(letter_or_digit)


@register("text_stats")
class TextStats(ColumnAugmenter):
    """Counts Unicode characters (after trimming), words (runs of letters and digits, inner
    apostrophes, hyphens and decimal marks included; unspaced scripts count per run) and
    sentences (text ended by . ! ? … 。！？ or by its end), with Arrow kernels over the whole batch.

    Reads: `column` (string).
    Adds: `{prefix}_chars`, `{prefix}_words`, `{prefix}_sentences` (int64; null for null text, 0 for blank).
    """

    Params = ColumnParams
    outputs = dict.fromkeys(("chars", "words", "sentences"), pa.int64())

    def setup(self) -> None:
        if missing := set(_PRELEARNT) - _members.keys():
            _learn(missing)

    def process_batch(self, batch: pd.DataFrame) -> dict[str, pd.Series]:
        counts = self.counts(pa.array(batch[self.params.column]))
        return {column: pd.Series(pd.arrays.ArrowExtensionArray(values)) for column, values in counts.items()}

    def process_arrow(self, batch: pa.Table) -> dict[str, pa.Array] | None:
        column = batch.column(self.params.column)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return None
        return self.counts(column.combine_chunks())

    def counts(self, column: pa.Array) -> dict[str, pa.Array]:
        """The added columns for the text column."""
        text = pc.utf8_trim_whitespace(column)
        word, sentence = narrowed(text.to_pylist()) if len(text) <= _NARROW_ROWS else (_WORD, _SENTENCE)
        # Mark sentence ends with a control character, then count the stretches holding words.
        marked = pc.replace_substring_regex(pc.replace_substring(text, "\x1e", " "), _SENTENCE_END, "\x1e")
        counts = {
            "chars": pc.utf8_length(text),
            "words": pc.count_substring_regex(text, word),
            "sentences": pc.count_substring_regex(marked, sentence),
        }
        return {self.params.output(suffix): pc.cast(values, pa.int64()) for suffix, values in counts.items()}
