"""The expensive augmenters' per-value code as it was before their fast paths: the plain library
calls, value by value. It is the oracle of the equivalence tests (test_fast_paths.py) and the
"before" of bench/augmenter_speed.py, so it is kept here verbatim and must not be optimised.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
import tldextract
from cleanco.clean import normalized, prepare_default_terms
from email_validator import validate_email

from pipelines.augmenters.base import blank_to_none, map_distinct

# --- normalize_phone ------------------------------------------------------------------------------


def phone(value: str, region: str | None) -> tuple[str | None, bool, str | None]:
    """(E.164, valid, region) of one number; a number that parses but cannot exist is invalid."""
    if region is None and value.startswith("00"):
        value = "+" + value[2:]  # "00" is the international prefix almost everywhere
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, False, None
    if not phonenumbers.is_valid_number(number):
        return None, False, None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, True, phonenumbers.region_code_for_number(number)


# --- normalize_email ------------------------------------------------------------------------------


def email(value: str) -> Mapping[str, Any]:
    try:
        checked = validate_email(value, check_deliverability=False)
    except ValueError:
        return {"valid": False}
    return {"normalized": checked.normalized.lower(), "domain": checked.domain.lower(), "valid": True}


# --- normalize_url --------------------------------------------------------------------------------

_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@cache
def _extract() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def url(value: str) -> Mapping[str, Any]:
    if any(c.isspace() for c in value):
        return {"valid": False}
    has_scheme = bool(_HAS_SCHEME.match(value))
    try:
        parts = urlsplit(value if has_scheme else "https://" + value.removeprefix("//"))
        port = parts.port
    except ValueError:
        return {"valid": False}
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host or (not has_scheme and "@" in parts.netloc):
        return {"valid": False}
    try:
        ip, domain = ipaddress.ip_address(host), None
    except ValueError:
        ip, domain = None, _extract()(host).top_domain_under_public_suffix
        if not domain or not all(_LABEL.match(label) for label in host.split(".")):
            return {"valid": False}
    netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = "" if parts.path == "/" else parts.path
    query = f"?{parts.query}" if parts.query else ""
    return {
        "url": f"{scheme}://{netloc}{path}{query}",
        "host": host.removeprefix("www.") if domain and host != domain else host,
        "domain": domain,
        "valid": True,
    }


# --- clean_company_name ---------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_CONNECTORS = frozenset({"and", "of", "the", "for", "de", "des", "du", "la", "le", "et", "und", "von", "van", "der"})
_SEPARATORS = " ,;:/&–—-"
_ABBREVIATIONS = frozenset({
    "sr", "jr", "st", "ste", "dr", "mr", "mrs", "ms", "mt", "ft", "bros", "assn", "assoc", "intl", "natl",
    "dept", "univ", "inst", "hosp", "mfg", "no", "vs", "ave", "blvd", "rd", "est", "etc",
})
_MORE_FORMS = [("sab", "de", "cv"), ("sa", "de", "cv"), ("s", "de", "rl", "de", "cv"), ("sapi", "de", "cv")]


@cache
def _legal_forms() -> dict[int, frozenset[tuple[str, ...]]]:
    forms: dict[int, set[tuple[str, ...]]] = {}
    for words in [tuple(words) for _, words in prepare_default_terms()] + _MORE_FORMS:
        forms.setdefault(len(words), set()).add(words)
    return {size: frozenset(found) for size, found in forms.items()}


def _key(word: str) -> str:
    return normalized(word).replace(".", "").replace(",", "").replace("-", "")


def _is_form(words: list[str], all_lower: bool) -> bool:
    key = tuple(_key(w) for w in words)
    if key not in _legal_forms().get(len(words), frozenset()):
        return False
    letters = "".join(c for c in "".join(words) if c.isalpha())
    marked = any(c in "./" for c in "".join(words))
    return len(letters) > 2 or letters.isupper() or marked or all_lower or key == ("co",)


def _county(words: list[str]) -> bool:
    return words[-1] in ("Co", "CO", "co") and words[-2] not in ("&", "and")


def split_legal_form(name: str) -> tuple[str, str | None]:
    words = name.split(" ")
    all_lower = name.islower()
    removed: list[str] = []
    while len(words) > 1:
        if not removed and _county(words):
            break
        sizes = sorted((n for n in _legal_forms() if n < len(words)), reverse=True)
        size = next((n for n in sizes if _is_form([w.rstrip(",") for w in words[-n:]], all_lower)), None)
        if size is None:
            break
        rest, form = words[:-size], words[-size:]
        if rest[-1] in ("&", "and") and _key(form[0]) == "co":
            rest, form = rest[:-1], [rest[-1], *form]
        kept = [w for w in rest if any(c.isalnum() for c in w)]
        if not kept or all(_key(w) in _CONNECTORS for w in kept):
            break
        if _key(rest[-1]) in _CONNECTORS:
            break
        removed = form + removed
        words = rest
    if not removed:
        return name, None
    base = " ".join(words).rstrip(_SEPARATORS)
    suffix = re.sub(r"^[\W_]+|[^\w.]+$", "", " ".join(removed))
    return base, suffix if any(c.isalpha() for c in suffix) else None


def _without_stray_dot(name: str) -> str:
    if not name.endswith(".") or name.endswith(".."):
        return name
    last = name[:-1].rsplit(" ", 1)[-1]
    if len(last) < 3 or "." in last or last.isupper() or _key(last) in _ABBREVIATIONS \
            or (_key(last),) in _legal_forms()[1]:
        return name
    return name[:-1]


def _latin(text: str) -> bool:
    return all("LATIN" in unicodedata.name(c, "") for c in text if c.isalpha())


def _title(name: str) -> str:
    shouting = name.isupper()

    def word(match: re.Match[str]) -> str:
        text = match.group()
        if text.lower() in _CONNECTORS:
            return text.capitalize() if match.start() == 0 else text.lower()
        return text if shouting and len(text) <= 3 else text.capitalize()

    return _WORD.sub(word, name)


def company_name(value: str) -> Mapping[str, Any]:
    name = " ".join(value.split())
    if not any(c.isalnum() for c in name):
        return {}
    base, suffix = split_legal_form(name)
    clean = _without_stray_dot(base.rstrip(_SEPARATORS) or base)
    if (clean.isupper() or clean.islower()) and _latin(clean):
        clean = _title(clean)
    return {"clean": clean, "legal_suffix": suffix}


# --- the batch around them ------------------------------------------------------------------------


def column_outputs(parse: Callable[[str], Mapping[str, Any]], suffixes: list[str],
                   column: list[Any]) -> dict[str, list[Any]]:
    """ColumnAugmenter.outputs_of as it was, by suffix: strip, one parse per distinct value."""
    parsed = map_distinct([blank_to_none(v) for v in column], parse)
    return {suffix: [None if row is None else row.get(suffix) for row in parsed] for suffix in suffixes}


def _region(value: str | None) -> str | None:
    code = (value or "").strip().upper()
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


def phone_outputs(column: list[Any], region_column: list[Any] | None,
                  default_region: str | None) -> dict[str, list[Any]]:
    """NormalizePhone.outputs_of as it was, by suffix."""
    numbers = [blank_to_none(v) for v in column]
    if region_column is not None:
        regions = [_region(r) or default_region for r in region_column]
    else:
        regions = [default_region] * len(numbers)
    keys = [None if n is None else (n, r) for n, r in zip(numbers, regions)]
    rows = [row or (None, None, None) for row in map_distinct(keys, lambda key: phone(*key))]
    return {suffix: [row[i] for row in rows] for i, suffix in enumerate(("e164", "valid", "region"))}
