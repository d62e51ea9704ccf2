"""text_stats: character, word and sentence counts of a text column."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.re2 import re2_class
from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

# RE2 patterns (Arrow's regex engine), where \w and \s are ASCII only: spell Unicode classes out.
_WORD_CHAR, _LETTER_OR_DIGIT, _DIGIT = r"[\p{L}\p{M}\p{N}_]", r"[\p{L}\p{N}]", r"\p{N}"
_SPACE = r"[\s\p{Z}]"  # RE2's \s is [\t\n\f\r ]
_CLASSES = (_WORD_CHAR, _LETTER_OR_DIGIT, _DIGIT, _SPACE)


def _word(word_char: str, digit: str) -> str:
    """don't, state-of-the-art, 3.14 and 1,000: one word each."""
    return f"{word_char}+(?:['’-]{word_char}+|[.,]{digit}+)*"


def _sentence(letter_or_digit: str) -> str:
    """A stretch between ends with a letter or digit in it."""
    return rf"[^\x1e]*{letter_or_digit}[^\x1e]*"


def _sentence_end(space: str, end_of_text: str) -> str:
    """"3.14" or "e.g" do not end a sentence."""
    return rf"[.!?…]+(?:{space}+|{end_of_text})|[。！？]+"


_WORD = _word(_WORD_CHAR, _DIGIT)
_SENTENCE_END = _sentence_end(_SPACE, "$")  # RE2's $ is the end of the text only
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
_python: dict[frozenset[str], tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]] = {}
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
    beyond_ascii = _beyond_ascii(texts)
    if (patterns := _narrowed.get(beyond_ascii)) is None:
        word_char, letter_or_digit, digit, _ = map(_class, _classes_of(beyond_ascii))
        patterns = _keep(_narrowed, beyond_ascii, (_word(word_char, digit), _sentence(letter_or_digit)))
    return patterns


def python_patterns(texts: Iterable[str | None]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(_WORD, _SENTENCE_END, _SENTENCE) as Python patterns, each class cut down as `narrowed`
    cuts it: with every class spelt out, Python's engine finds the matches RE2 finds (both take
    the leftmost match, alternatives in order, greedy repeats; none of these matches empty text)."""
    beyond_ascii = _beyond_ascii(texts)
    if (patterns := _python.get(beyond_ascii)) is None:
        word_char, letter_or_digit, digit, space = map(_python_class, _classes_of(beyond_ascii))
        patterns = _keep(_python, beyond_ascii, (re.compile(_word(word_char, digit)),
                                                 re.compile(_sentence_end(space, r"\Z")),
                                                 re.compile(_sentence(letter_or_digit))))
    return patterns


Kept = TypeVar("Kept")


def _keep(memo: dict[frozenset[str], Kept], key: frozenset[str], patterns: Kept) -> Kept:
    if len(memo) >= _NARROWED_KEPT:
        memo.clear()
    memo[key] = patterns
    return patterns


def _beyond_ascii(texts: Iterable[str | None]) -> frozenset[str]:
    return frozenset().union(*(text for text in texts if text)) - _ASCII


def _classes_of(beyond_ascii: frozenset[str]) -> tuple[list[str], ...]:
    """The characters of ASCII and `beyond_ascii` in each of _CLASSES."""
    chars = sorted(_ASCII | beyond_ascii)
    missing = {ord(c) // _BLOCK for c in chars} - _members.keys()
    if missing:
        _learn(missing)
    return tuple([c for c in chars if c in _members[ord(c) // _BLOCK][i]] for i in range(len(_CLASSES)))


def _python_class(chars: list[str]) -> str:
    """A Python character class of exactly these characters (never none: ASCII has some of each)."""
    return "[" + "".join(re.escape(c) for c in chars) + "]"


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

    def process_values(self, columns: Mapping[str, list[Any]],
                       types: Mapping[str, pa.DataType]) -> dict[str, Sequence[Any]] | None:
        """A few records' counts by Python's engine on `python_patterns`: the three kernel calls
        compiled their patterns anew each (a fifth of a one-record request)."""
        column = self.params.column
        if not (pa.types.is_string(types[column]) or pa.types.is_large_string(types[column])):
            return None
        texts = pc.utf8_trim_whitespace(pa.array(columns[column], types[column])).to_pylist()
        word, sentence_end, sentence = python_patterns(texts)
        counts: dict[str, list[int | None]] = {"chars": [], "words": [], "sentences": []}
        for text in texts:
            if text is None:
                for values in counts.values():
                    values.append(None)
                continue
            counts["chars"].append(len(text))  # code points, as utf8_length counts
            counts["words"].append(len(word.findall(text)))
            counts["sentences"].append(len(sentence.findall(sentence_end.sub("\x1e", text.replace("\x1e", " ")))))
        return {self.params.output(suffix): values for suffix, values in counts.items()}

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
