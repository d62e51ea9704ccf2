"""normalize_country: a country written any common way, as its ISO 3166-1 alpha-2 code and name."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import cache
from typing import Any

import pyarrow as pa
import pycountry

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import INVALID, ColumnAugmenter, ColumnParams

# Common names pycountry does not know (it knows "South Korea", "Czech Republic", "Vietnam"...).
ALIASES: dict[str, str] = {
    "uk": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "deutschland": "DE", "holland": "NL", "nederland": "NL",
    "russia": "RU", "turkey": "TR", "ivory coast": "CI", "macedonia": "MK", "uae": "AE",
    "espana": "ES", "brasil": "BR", "schweiz": "CH", "suisse": "CH", "osterreich": "AT",
    "italia": "IT", "vatican": "VA", "burma": "MM", "swaziland": "SZ", "micronesia": "FM",
    "st lucia": "LC", "st kitts and nevis": "KN", "st vincent and the grenadines": "VC", "palestine": "PS",
}
# Names of more than one country: "Congo" is the Republic (CG) to ISO and often the DRC (CD) to
# people. Unknown beats wrong, so they are not valid.
AMBIGUOUS = frozenset({"congo", "korea", "america", "virgin islands", "guinea republic"})


def _key(text: str) -> str:
    """Case, accents, punctuation and a leading "the" do not matter: " U.S.A. " -> "usa"."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[.'’]", "", text)  # U.S.A. -> usa, Côte d'Ivoire -> cote divoire
    text = " ".join(re.sub(r"[\W_]+", " ", text).split())
    return text.removeprefix("the ")


@cache
def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for country in pycountry.countries:
        for text in (country.alpha_2, country.alpha_3, country.name,
                     getattr(country, "official_name", None), getattr(country, "common_name", None)):
            if text:
                index[_key(text)] = country.alpha_2
    index.update({_key(alias): code for alias, code in ALIASES.items()})
    for name in AMBIGUOUS:
        index.pop(_key(name), None)
    return index


@register("normalize_country")
class NormalizeCountry(ColumnAugmenter):
    """Recognises ISO alpha-2 and alpha-3 codes, names, official and common names, and a few
    aliases, ignoring case, accents, punctuation and spacing ("U.S.A.", " germany ").

    Reads: `column` (string).
    Adds: `{prefix}_code` (ISO 3166-1 alpha-2), `{prefix}_name` (common name, else ISO name),
    `{prefix}_valid` (bool).
    """

    Params = ColumnParams
    outputs = {"code": pa.string(), "name": pa.string(), "valid": pa.bool_()}

    def setup(self) -> None:
        _index()

    def parse(self, value: str) -> Mapping[str, Any]:
        code = _index().get(_key(value))
        if code is None:
            return INVALID
        country = pycountry.countries.get(alpha_2=code)  # never None: the index holds pycountry's own codes
        name = getattr(country, "common_name", None) or getattr(country, "name", None)
        return {"code": code, "name": name, "valid": True}
