"""text_stats: character, word and sentence counts of a text column."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

# RE2 patterns (Arrow's regex engine), where \w and \s are ASCII only: spell Unicode classes out.
# don't, state-of-the-art, 3.14 and 1,000: one word each
_WORD = r"[\p{L}\p{M}\p{N}_]+(?:['’-][\p{L}\p{M}\p{N}_]+|[.,]\p{N}+)*"
_SENTENCE_END = r"[.!?…]+(?:[\s\p{Z}]+|$)|[。！？]+"  # "3.14" or "e.g" do not end a sentence
_SENTENCE = r"[^\x1e]*[\p{L}\p{N}][^\x1e]*"  # a stretch between ends with a letter or digit in it


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

    def process_batch(self, batch: pd.DataFrame) -> dict[str, pd.Series]:
        text = pc.utf8_trim_whitespace(pa.array(batch[self.params.column]))
        # Mark sentence ends with a control character, then count the stretches holding words.
        marked = pc.replace_substring_regex(pc.replace_substring(text, "\x1e", " "), _SENTENCE_END, "\x1e")
        counts = {
            "chars": pc.utf8_length(text),
            "words": pc.count_substring_regex(text, _WORD),
            "sentences": pc.count_substring_regex(marked, _SENTENCE),
        }
        return {
            self.params.output(suffix): pd.Series(pd.arrays.ArrowExtensionArray(pc.cast(values, pa.int64())))
            for suffix, values in counts.items()
        }
