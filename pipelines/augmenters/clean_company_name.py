"""clean_company_name: a company name without its legal form, in readable case.

The legal forms are cleanco's vocabulary (Ltd, GmbH & Co. KG, S.A., ООО ... in many languages),
matched here as whole words at the end of the name only, so that the name's own punctuation —
brackets, a closing `!`, the dot of `Sr.` — is never touched. When unsure, the name is kept.

Speed without changing an output (tests/unit/augmenters/test_fast_paths.py checks against the plain
code): a word's key is worked out once per distinct word (`_key`), the legal forms that end a name
are found by walking a tree of them back from its last word (`_forms_ending`) instead of trying
every length, and only names with letters outside ASCII have theirs looked up in the Unicode
database (`_latin`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

import pyarrow as pa
from cleanco.clean import normalized, prepare_default_terms

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes (O'Neil)
_FORM_ENDS = re.compile(r"^[\W_]+|[^\w.]+$")  # what a removed legal form loses at either end
_ALNUM = re.compile(r"[^\W_]")  # str.isalnum's characters, exactly (both are Py_UNICODE_ISALNUM)
_CONNECTORS = frozenset({"and", "of", "the", "for", "de", "des", "du", "la", "le", "et", "und", "von", "van", "der"})
# Left behind by a removed legal form: "Daddy & Sons, Ltd." -> "Daddy & Sons,".
_SEPARATORS = " ,;:/&–—-"
# Words whose dot is part of them: "Acme Sr." keeps it; "Acme." loses a stray one.
_ABBREVIATIONS = frozenset({
    "sr", "jr", "st", "ste", "dr", "mr", "mrs", "ms", "mt", "ft", "bros", "assn", "assoc", "intl", "natl",
    "dept", "univ", "inst", "hosp", "mfg", "no", "vs", "ave", "blvd", "rd", "est", "etc",
})


# Forms cleanco lacks, whose last words it would otherwise take alone ("S.A.B. de C.V." -> "... de").
_MORE_FORMS = [("sab", "de", "cv"), ("sa", "de", "cv"), ("s", "de", "rl", "de", "cv"), ("sapi", "de", "cv")]


@cache
def _legal_forms() -> dict[int, frozenset[tuple[str, ...]]]:
    """cleanco's legal forms (and ours) as normalised word tuples, by length."""
    forms: dict[int, set[tuple[str, ...]]] = {}
    for words in [tuple(words) for _, words in prepare_default_terms()] + _MORE_FORMS:
        forms.setdefault(len(words), set()).add(words)
    return {size: frozenset(found) for size, found in forms.items()}


@cache
def _tails() -> dict[str | None, Any]:
    """The legal forms as a tree read from their last word's key back: each node maps the key of
    the word before to the next node, and holds None where a form ends (starts, read forwards)."""
    root: dict[str | None, Any] = {}
    for forms in _legal_forms().values():
        for words in forms:
            node = root
            for word in reversed(words):
                node = node.setdefault(word, {})
            node[None] = True
    return root


@lru_cache(maxsize=1 << 16)
def _key(word: str) -> str:
    """A word as cleanco's terms spell it: caseless, no accents, no dots, commas or hyphens."""
    return normalized(word).replace(".", "").replace(",", "").replace("-", "")


def _forms_ending(words: list[str]) -> list[int]:
    """The sizes n < len(words) for which the last n words (trailing commas aside) are, by their
    keys, a legal form; shortest first."""
    node: Any = _tails()
    sizes: list[int] = []
    for n in range(1, len(words)):
        node = node.get(_key(words[-n].rstrip(",")))
        if node is None:
            break
        if None in node:
            sizes.append(n)
    return sizes


def _written_as_form(words: list[str], all_lower: bool) -> bool:
    """Whether these trailing words, a legal form by their keys, count as one as written. A short
    one (AB, SA, AS) counts only in capitals (or in a name written all in lower case), so that a
    word of the name is not taken for one."""
    written = "".join(words)
    letters = "".join(filter(str.isalpha, written))
    marked = "." in written or "/" in written  # S.A., A/S, Co.
    return len(letters) > 2 or letters.isupper() or marked or all_lower or [_key(w) for w in words] == ["co"]


def _county(words: list[str]) -> bool:
    """A name ending in a bare `Co` names a county (`Orange Co`); `Co.`, `& Co` and `Co Ltd` are
    companies."""
    return words[-1] in ("Co", "CO", "co") and words[-2] not in ("&", "and")


def split_legal_form(name: str) -> tuple[str, str | None]:
    """(the name without the legal forms that end it, those forms as written, or None)."""
    words = name.split(" ")
    all_lower = name.islower()
    removed: list[str] = []
    while len(words) > 1:
        if not removed and _county(words):
            break
        size = 0
        for n in reversed(_forms_ending(words)):  # the longest that counts
            if _written_as_form([w.rstrip(",") for w in words[-n:]], all_lower):
                size = n
                break
        if not size:
            break
        rest, form = words[:-size], words[-size:]
        if rest[-1] in ("&", "and") and _key(form[0]) == "co":  # "Smith & Co", "Sears, Roebuck and Co."
            rest, form = rest[:-1], [rest[-1], *form]
        if not _has_own_word(rest):
            break  # nothing but a legal form (or "The Company"): kept whole
        if _key(rest[-1]) in _CONNECTORS:
            break  # "... S.A.B. de C.V." read as "C.V." alone would leave "de": unsure, so kept
        removed = form + removed
        words = rest
    if not removed:
        return name, None
    base = " ".join(words).rstrip(_SEPARATORS)
    suffix = _FORM_ENDS.sub("", " ".join(removed))  # ", Ltd." -> "Ltd."
    return base, suffix if any(map(str.isalpha, suffix)) else None


def _has_own_word(words: list[str]) -> bool:
    """Whether any of the words has a letter or digit and is not a connector ("of", "the" ...)."""
    for word in words:
        if _ALNUM.search(word) and _key(word) not in _CONNECTORS:
            return True
    return False


def _without_stray_dot(name: str) -> str:
    """`Acme.` -> `Acme`, but `Acme Sr.`, `J.`, `U.S.A.` keep theirs."""
    if not name.endswith(".") or name.endswith(".."):
        return name
    last = name[:-1].rsplit(" ", 1)[-1]
    if len(last) < 3 or "." in last or last.isupper() or _key(last) in _ABBREVIATIONS \
            or (_key(last),) in _legal_forms()[1]:  # "Inc." alone is kept whole
        return name
    return name[:-1]


def _latin(text: str) -> bool:
    # ASCII letters are all LATIN ... LETTER ...: the Unicode names are for the rest.
    return text.isascii() or all(_latin_letter(c) for c in text if c.isalpha())


@lru_cache(maxsize=1 << 12)
def _latin_letter(letter: str) -> bool:
    return "LATIN" in unicodedata.name(letter, "")


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
    """Removes the legal forms that end a name (Ltd, GmbH & Co. KG, S.A. ...) as whole words,
    collapses whitespace, drops a stray final dot, and title-cases names written all in upper or
    lower case Latin letters. Other scripts are left as written; a name that is only a legal form
    is kept whole; a value without any letter or digit gives nulls.

    Reads: `column` (string).
    Adds: `{prefix}_clean`, `{prefix}_legal_suffix` (the removed legal form as written, or null).
    """

    Params = ColumnParams
    outputs = {"clean": pa.string(), "legal_suffix": pa.string()}

    def parse(self, value: str) -> Mapping[str, Any]:
        name = " ".join(value.split())
        if not _ALNUM.search(name):
            return {}  # "-", "...": nothing to clean
        base, suffix = split_legal_form(name)
        clean = _without_stray_dot(base.rstrip(_SEPARATORS) or base)
        if (clean.isupper() or clean.islower()) and _latin(clean):
            clean = _title(clean)
        return {"clean": clean, "legal_suffix": suffix}
