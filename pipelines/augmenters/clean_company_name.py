"""clean_company_name: a company name without its legal form, in readable case."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from cleanco import basename

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes (O'Neil)
_CONNECTORS = frozenset({"and", "of", "the", "for", "de", "des", "du", "la", "le", "et", "und", "von", "van", "der"})
_TRAILING = re.compile(r"[\s,;:/&–—-]+$|(?<!\.\w)\.$")  # keep the last dot of "U.S.A."


def _latin(text: str) -> bool:
    return all("LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())


def _title(name: str) -> str:
    """ACME WIDGETS -> Acme Widgets, keeping short all-caps words (IBM, AT&T) when shouting."""
    shouting = name.isupper()

    def word(match: re.Match[str]) -> str:
        text = match.group()
        if text.lower() in _CONNECTORS:
            return text.capitalize() if match.start() == 0 else text.lower()
        return text if shouting and len(text) <= 3 else text.capitalize()

    return _WORD.sub(word, name)


@register("clean_company_name")
class CleanCompanyName(ColumnAugmenter):
    """Removes legal forms (Ltd, GmbH & Co. KG, S.A. ...) with cleanco, collapses whitespace and
    trailing punctuation, and title-cases names written all in upper or lower case Latin letters.
    Other scripts are left as written; a name that is only a legal form is kept whole; a value
    without any letter or digit gives nulls.

    Reads: `column` (string).
    Adds: `{prefix}_clean`, `{prefix}_legal_suffix` (the removed legal form as written, or null).
    """

    Params = ColumnParams
    outputs = {"clean": pa.string(), "legal_suffix": pa.string()}

    def parse(self, value: str) -> Mapping[str, Any]:
        name = " ".join(value.split())
        if not any(c.isalnum() for c in name):
            return {}  # "-", "...": nothing to clean
        base = name
        while (shorter := basename(base)) and shorter != base:  # "Co., Ltd." takes two passes
            base = shorter
        suffix = name[len(base):] if name.startswith(base) else ""
        suffix = re.sub(r"^[\W_]+|[^\w.]+$", "", suffix)  # ", Ltd." -> "Ltd."
        clean = _TRAILING.sub("", base) or base
        if (clean.isupper() or clean.islower()) and _latin(clean):
            clean = _title(clean)
        return {"clean": clean, "legal_suffix": suffix if any(c.isalpha() for c in suffix) else None}
