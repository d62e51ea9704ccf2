"""The deterministic augmenters on tables of real-world values: a cleaner never makes a value
wrong. When a value cannot be read for sure it is not guessed: its outputs are null and
`<prefix>_valid` is false, and the input column is untouched."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pipelines.augmenters.normalize_country import NormalizeCountry
from pipelines.augmenters.normalize_email import NormalizeEmail
from pipelines.augmenters.normalize_phone import NormalizePhone, NormalizePhoneParams
from pipelines.augmenters.normalize_url import NormalizeUrl
from pipelines.augmenters.single_column import ColumnParams

URLS = [  # (input, url, host, domain) — None: not valid
    ("https://www.acme.co.uk/", "https://www.acme.co.uk", "acme.co.uk", "acme.co.uk"),
    ("acme.com", "https://acme.com", "acme.com", "acme.com"),
    ("HTTP://Acme.COM:80/Path?q=1#frag", "http://acme.com/Path?q=1", "acme.com", "acme.com"),  # path case kept
    ("https://acme.com/Some%20Path", "https://acme.com/Some%20Path", "acme.com", "acme.com"),
    ("https://acme.com/path?Q=Case", "https://acme.com/path?Q=Case", "acme.com", "acme.com"),
    ("https://acme.com:8443/", "https://acme.com:8443", "acme.com", "acme.com"),
    ("//acme.com/x", "https://acme.com/x", "acme.com", "acme.com"),
    ("https://acme.com.", "https://acme.com", "acme.com", "acme.com"),
    ("shop.acme.com.au/cart", "https://shop.acme.com.au/cart", "shop.acme.com.au", "acme.com.au"),
    ("http://192.168.0.1/x", "http://192.168.0.1/x", "192.168.0.1", None),
    ("https://münchen.de", "https://münchen.de", "münchen.de", "münchen.de"),
    ("ftp://files.acme.com", None, None, None),
    ("mailto:info@acme.com", None, None, None),
    ("info@acme.com", None, None, None),
    ("javascript:alert(1)", None, None, None),
    ("https://-bad-.com", None, None, None),
    ("acme", None, None, None),
    ("localhost:8080", None, None, None),
    ("www.acme.com/about us", None, None, None),  # a space: not a URL, not guessed
    ("https://acme.com:99999/", None, None, None),
]


@pytest.mark.parametrize(("value", "url", "host", "domain"), URLS, ids=[u[0] for u in URLS])
def test_urls(value: str, url: str | None, host: str | None, domain: str | None) -> None:
    parsed = NormalizeUrl(ColumnParams(column="w"), "u").parse(value)
    if url is None:
        assert parsed == {"valid": False}
    else:
        assert parsed == {"url": url, "host": host, "domain": domain, "valid": True}


EMAILS = [  # (input, normalized) — None: not valid
    ("John.Doe@Example.COM", "john.doe@example.com"),
    ("user+tag@gmail.com", "user+tag@gmail.com"),
    ("José@Example.com", "josé@example.com"),
    ("Ünïcode@bücher.de", "ünïcode@bücher.de"),
    ("info@acme.co.uk", "info@acme.co.uk"),
    ("a@b", None),
    ("no-at-sign", None),
    ("two@@example.com", None),
    ("x@[127.0.0.1]", None),
    ("space in@example.com", None),
    ("trailing.dot.@example.com", None),
]


@pytest.mark.parametrize(("value", "normalized"), EMAILS, ids=[e[0] for e in EMAILS])
def test_emails(value: str, normalized: str | None) -> None:
    parsed = NormalizeEmail(ColumnParams(column="e"), "e").parse(value)
    if normalized is None:
        assert parsed == {"valid": False}
    else:
        assert parsed["normalized"] == normalized and parsed["valid"] is True
        assert parsed["domain"] == normalized.split("@")[1]


PHONES = [  # (input, region, e164) — None: not valid
    ("(020) 7946 0018", "GB", "+442079460018"),
    ("+1 (415) 555-2671", "GB", "+14155552671"),
    ("+33 1 23 45 67 89", None, "+33123456789"),
    ("0033 1 23 45 67 89", None, "+33123456789"),  # 00 is the international prefix without a region
    ("+49 (0) 30 123456", None, "+4930123456"),
    ("+1 800 356 9377", None, "+18003569377"),
    ("415-555-2671", "GB", None),  # a US number read as British cannot exist: not guessed
    ("415-555-2671", "US", "+14155552671"),
    ("12", "GB", None),
    ("not a phone", "GB", None),
    ("+999 123", None, None),
    ("020 7946 0018 / 020 7946 0019", "GB", None),  # two numbers: neither is chosen
]


@pytest.mark.parametrize(("value", "region", "e164"), PHONES, ids=[f"{p[0]}|{p[1]}" for p in PHONES])
def test_phones(value: str, region: str | None, e164: str | None) -> None:
    step = NormalizePhone(NormalizePhoneParams(column="p", default_region=region), "p")
    out: dict[str, Any] = step.process_batch(pd.DataFrame({"p": [value]}))
    assert (out["p_e164"][0], out["p_valid"][0]) == (e164, e164 is not None)


COUNTRIES = [  # (input, code) — None: not valid
    ("UK", "GB"), ("U.S.A.", "US"), ("USA ", "US"), ("Deutschland", "DE"), ("Holland", "NL"), ("Türkiye", "TR"),
    ("Turkey", "TR"), ("Côte d'Ivoire", "CI"), ("Ivory Coast", "CI"), ("Czechia", "CZ"), ("Macedonia", "MK"),
    ("Russia", "RU"), ("Burma", "MM"), ("Swaziland", "SZ"), ("St Lucia", "LC"), ("Saint Lucia", "LC"),
    ("Niger", "NE"), ("Nigeria", "NG"), ("Dominica", "DM"), ("Dominican Republic", "DO"), ("England", "GB"),
    ("Palestine", "PS"), ("Micronesia", "FM"),
    ("Congo", None),  # the Republic or the Democratic Republic: not guessed
    ("Korea", None), ("America", None), ("Virgin Islands", None), ("EU", None), ("Europe", None),
    ("Kosovo", None),  # no ISO 3166-1 code
]


@pytest.mark.parametrize(("value", "code"), COUNTRIES, ids=[c[0] for c in COUNTRIES])
def test_countries(value: str, code: str | None) -> None:
    parsed = NormalizeCountry(ColumnParams(column="c"), "c").parse(value.strip())
    assert parsed.get("code") == code and parsed["valid"] is (code is not None)
