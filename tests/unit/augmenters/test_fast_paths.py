"""The fast paths of the costly deterministic augmenters (normalize_phone, normalize_email,
normalize_url, clean_company_name) give exactly what their plain library calls give: the code as it
was, kept in plain_paths.py. Checked value by value on the synthetic organisations at several seeds,
on every region's example phone numbers in every format, and on generated odd values (Unicode,
blanks, garbage, IDN domains, odd phone formats), batch by batch on columns with repeats, nulls and
blanks, and character by character over all of Unicode where a pattern stands in for a str method.
The fast paths must also be the ones taken for typical values, or these tests would prove little.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import phonenumbers
import pyarrow as pa
import pytest
from cleanco.termdata import terms_by_country, terms_by_type
from email_validator.syntax import validate_email_domain_name
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from pipelines.augmenters import clean_company_name, normalize_email, normalize_phone, normalize_url
from pipelines.augmenters.clean_company_name import CleanCompanyName
from pipelines.augmenters.normalize_email import NormalizeEmail
from pipelines.augmenters.normalize_phone import NormalizePhone, NormalizePhoneParams
from pipelines.augmenters.normalize_url import NormalizeUrl
from pipelines.augmenters.registry import build_step
from pipelines.augmenters.single_column import ColumnParams
from pipelines.spec.workflow import StepSpec
from tests.unit.augmenters import plain_paths as plain
from tests.unit.augmenters.test_company_names import NAMES

ROOT = Path(__file__).resolve().parents[3]
SEEDS = (1, 2, 3)
ROWS = 1000  # per seed


@cache
def synth() -> ModuleType:
    """bench/synth.py, the generator of the benchmarks' records (stdlib only)."""
    spec = importlib.util.spec_from_file_location("augment_bench_synth", ROOT / "bench" / "synth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@cache
def records() -> list[dict[str, str]]:
    """The synthetic organisations at each seed, with the country code normalize_country reads."""
    rows = [row for seed in SEEDS for row in synth().organisations(ROWS, seed)]
    country = build_step(StepSpec(use="normalize_country", params={"column": "country"}), "c")
    country.setup()
    codes = country.apply(pa.table({"country": [r["country"] for r in rows]}))["country_code"].to_pylist()
    return [{**row, "country_code": code} for row, code in zip(rows, codes)]


def column(name: str) -> list[str]:
    return [row[name] for row in records()]


def differences(new: Callable[..., Any], old: Callable[..., Any], cases: list[tuple[Any, ...]]) -> list[Any]:
    """The cases where the new code and the old give different answers (the first 20)."""
    found = []
    for case in cases:
        a, b = new(*case), old(*case)
        if (dict(a) if isinstance(a, Mapping) else a) != (dict(b) if isinstance(b, Mapping) else b):
            found.append((case, a, b))
            if len(found) == 20:
                break
    return found


def every_character() -> Iterator[str]:
    return (chr(point) for point in range(sys.maxunicode + 1))


# --- normalize_phone ------------------------------------------------------------------------------

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
ODD_PHONES = [
    "０３−１２３４−５６７８", "٠٣١٢٣٤٥٦٧٨", "+٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨", "1-800-FLOWERS", "+1 650 253 0000 ext. 123",
    "+1 650 253 0000 x123", "(650) 253-0000 #12", "020 7946 0958;ext=7", "tel:+1-650-253-0000",
    "tel:253-0000;phone-context=+1-650", "+44 20 7946 0958 / x2", "(+44) 20 7946 0958", "++44 20 7946 0958",
    "+ 44 20 7946 0958", "44+20 7946 0958", "020 7946 0958+", "12", "1", "00", "000", "+", "+0 20 7946 0958",
    "+999 1234 5678", "+800 1234 5678", "+882 3421 2345", "+979 123456789", "011 44 20 7946 0958",
    "0011 61 2 9876 5432", "33142685300", "442079460958", "0033142685300", "011 15-2345-6789",
    "044 55 1234 5678", "+52 1 55 1234 5678", "+39 06 4567 8901", "+39 0 6 4567 8901", "06 4567 8901",
    "+44 (0)20 7946 0958", "+49 (0)89 1234567", "0 20 7946 0958", "(0)20 7946 0958", "8 (495) 123-45-67",
    "+7 495 123-45-67", "1 (650) 253-0000", "1-650-253-0000", "+1 (242) 357-1234", "+1 684 622 1234",
    "+61 8 9164 1234", "+262 269 61 1234", "+590 590 27-1234", "+47 22 12 34 56", "+358 9 123 4567",
    "0" * 20, "1" * 18, "+" + "1" * 17, "9" * 251, "+33 1 42 68 53 00 " + " " * 240, "\u00a0+33 1 42 68 53 00",
    "+33\u00a01\u00a042 68 53 00", "+33\t1 42 68 53 00", "+33 1-42.68/53(00)", "phone on request", "call us",
    "ask for Bob", "n/a", "-", "...", "+33 1 42 68 53 00 ", " 01 42 68 53 00",
]


@cache
def phone_cases() -> list[tuple[str, str | None]]:
    rng = random.Random(11)
    cases: list[tuple[str, str | None]] = []
    for row in records():
        number = row["phone"].strip()
        cases += [(number, normalize_phone._region(row["country_code"])), (number, None), (number, "US")]
    types = [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
             PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.VOIP,
             PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.PAGER, PhoneNumberType.UAN, PhoneNumberType.VOICEMAIL]
    examples: list[tuple[str | None, phonenumbers.PhoneNumber | None]] = [
        (region, phonenumbers.example_number_for_type(region, kind)) for region in REGIONS for kind in types]
    examples += [(None, phonenumbers.example_number_for_non_geo_entity(code))
                 for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)]
    formats = (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL,
               PhoneNumberFormat.RFC3966)
    for region, example in examples:
        if example is None:
            continue
        for style in formats:
            text = phonenumbers.format_number(example, style)
            cases += [(text, region), (text, rng.choice([None, *REGIONS]))]
        text = phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL)
        # a digit or two changed: near misses of valid numbers
        mutated = "".join(rng.choice("0123456789") if c.isdigit() and rng.random() < 0.25 else c for c in text)
        cases += [(mutated, region), (mutated.replace("+", "00", 1), None), (mutated.replace("+", "", 1), region)]
    for _ in range(4000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17)))
        start = rng.choice(["", "", "+", "00", "0", "011", "(0)", "+0", "+ ", "(+", "1 ", "+1"])
        text = start + "".join(c + (rng.choice(" -./()") if rng.random() < 0.2 else "") for c in digits)
        cases.append((text.strip(), rng.choice([*REGIONS, *[None] * 20, "US", "GB", "FR", "DE"])))
    for text in ODD_PHONES:
        cases += [(text, region) for region in (None, "US", "GB", "FR", "IT", "MX", "AR", "RU", "AU")]
    return cases


def test_normalize_phone_parses_every_value_as_phonenumbers_does() -> None:
    cases = [(text, region) for text, region in phone_cases() if text]
    assert len(cases) > 25_000
    assert differences(normalize_phone._parse, plain.phone, cases) == []


def test_normalize_phone_reads_typical_numbers_by_their_digits() -> None:
    """The synthetic phones go the fast way (the equivalence above is not about the library path alone)."""
    taken = 0
    for row in records():
        region = normalize_phone._region(row["country_code"])
        value = row["phone"].strip()
        value = "+" + value[2:] if region is None and value.startswith("00") else value
        canonical = normalize_phone._canonical(value)
        taken += canonical is not None and normalize_phone._parse_digits(*canonical, region) is not None
    assert taken / len(records()) > 0.95


def test_validity_and_region_are_phonenumbers_own() -> None:
    rng = random.Random(12)
    numbers = []
    for text, region in phone_cases()[::3]:
        try:
            numbers.append(phonenumbers.parse(text, region))
        except phonenumbers.NumberParseException:
            continue
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):  # random national numbers everywhere
        for _ in range(8):
            nsn = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 15)))
            numbers.append(phonenumbers.parse(f"+{code}{nsn}", None) if nsn[0] != "0" else
                           phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn)))
    assert len(numbers) > 6000
    judged = [(normalize_phone._judge(n.country_code, phonenumbers.national_significant_number(n)),
               (phonenumbers.is_valid_number(n), phonenumbers.region_code_for_number(n)), n) for n in numbers]
    assert [case for case in judged if case[0] != case[1]][:10] == []
    assert sum(valid for (valid, _), _, _ in judged) > 2000  # valid numbers too, not only misses


@pytest.mark.parametrize("default_region", [None, "FR", "US"])
def test_normalize_phone_batches_as_before(default_region: str | None) -> None:
    numbers = column("phone")[:3000] + ["", "  ", None, *ODD_PHONES] + column("phone")[:50]  # repeats
    regions = column("country_code")[:3000] + ["XX", "gb", " fr ", None, *["JP"] * len(ODD_PHONES)] \
        + [None] * 50
    step = NormalizePhone(NormalizePhoneParams(column="p", region_column="r", default_region=default_region), "s")
    new = step.outputs_of(numbers, regions)
    old = plain.phone_outputs(numbers, regions, default_region)
    assert {suffix: list(new[f"p_{suffix}"]) for suffix in old} == old
    alone = NormalizePhone(NormalizePhoneParams(column="p", default_region=default_region), "s")
    assert {k: list(v) for k, v in alone.outputs_of(numbers, None).items()} == \
        {f"p_{k}": v for k, v in plain.phone_outputs(numbers, None, default_region).items()}


# --- normalize_email ------------------------------------------------------------------------------

ODD_EMAILS = [
    "John.Doe@Example.COM", "postmaster@Example.com", "Info@Acme.co.uk", "user+tag@gmail.com", "a@b", "a@localhost",
    "a@[127.0.0.1]", "a@[IPv6:::1]", "a@xn--bcher-kva.de", "a@XN--BCHER-KVA.DE", "a@xn--bcher.de", "a@bücher.de",
    "a@BÜCHER.de", "José@Example.com", "用户@例子.广告", "a@例え.jp", "a@ab--cd.com", "a@xn--ab.com", "a@-a.com",
    "a@a-.com", "a@a..com", "a@.com", "a@com.", "a@x.test", "a@x.invalid", "a@x.local", "a@x.onion", "a@x.arpa",
    "a@localhost.localhost", "a@123.456", "a@x.c0m", "a@x.co1", ".a@x.com", "a.@x.com", "a..b@x.com", "a@x_y.com",
    "A@X.COM", '"a"@x.com', '"a b"@x.com', "Jo <jo@acme.com>", "<jo@acme.com>", "jo@acme.com>", "a@x.com ", " a@x.com",
    "a@@x.com", "a@x@y.com", "@x.com", "a@", "@", "", "   ", "a@x.com\n", "a\u200b@x.com", "a@x\u200b.com",
    "a@x.com\u00a0", "ａ@ｘ.com", "a＠x.com", "a﹫x.com", "a@x．com", "a@ｘ.com", "a@x.ｃｏｍ", "e\u0301@x.com",
    "\u0301e@x.com", "a@e\u0301.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a@" + ("b" * 63 + ".") * 3 + "b" * 61 + ".c", "a@" + ("b" * 63 + ".") * 4 + "com", "a" * 64 + "@x.com",
    "a" * 65 + "@x.com", "a" * 200 + "@" + "b" * 49 + ".com", "a" * 200 + "@" + "b" * 50 + ".com",
    "a" * 180 + "@" + "ü" * 60 + ".de", "x@" + "ü" * 62 + ".de", "a!#$%&'*+/=?^_`{|}~-@x.com", "a(b)@x.com",
    "a,b@x.com", "a:b@x.com", "a;b@x.com", "a\\b@x.com", "a[b]@x.com", "info@acme..com", "info@acme.com.",
]


def email_cases() -> list[str]:
    rng = random.Random(13)
    cases = [value.strip() for value in column("email")] + ODD_EMAILS
    alphabet = [*"abcXYZ09._-+!#$%&'*/=?^`{|}~@\"<>[]() ,;:\\", "é", "ü", "用", "例", "ß", "\u0301", "\u200b",
                "\u00a0", "ｘ", "．", "xn--", "—", ".com", ".de", "acme", "ab--"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        cases += [text, f"info@{text}", f"{text}@acme.com", f"a.b@{text}.com"]
    return cases


def test_normalize_email_checks_every_value_as_email_validator_does() -> None:
    step = NormalizeEmail(ColumnParams(column="e"), "s")
    cases = [(value,) for value in email_cases() if value]
    assert len(cases) > 12_000
    assert differences(step.parse, plain.email, cases) == []


def test_email_domains_are_validated_as_email_validator_does() -> None:
    rng = random.Random(14)
    labels = ["acme", "ACME", "a", "a-b", "a--b", "ab--c", "xn--bcher-kva", "xn--ab", "Xn--x", "-a", "a-", "1", "123",
              "x" * 63, "y" * 64, "test", "local", "onion", "arpa", "localhost", "invalid", "com", "de", "co", "uk", "",
              "a_b", "bücher", "例え", "c0m"]
    domains = [".".join(rng.choice(labels) for _ in range(rng.randint(1, 5))) for _ in range(8000)]
    domains += [("a" * 60 + ".") * 4 + "com", ("a" * 62 + ".") * 4 + "com"]
    domains += sorted({value.strip().rpartition("@")[2] for value in column("email")})  # real-looking ones

    def library(domain: str) -> tuple[str, str] | None:
        try:
            names = validate_email_domain_name(domain, test_environment=False, globally_deliverable=True)
        except ValueError:
            return None
        return names["domain"], names["ascii_domain"]

    assert differences(lambda d: normalize_email._domain(d, False, True), library, [(d,) for d in domains]) == []
    assert sum(normalize_email._plain_domain(d) is not None for d in domains) > 2000  # the shortcut is taken


def test_normalize_email_reads_typical_addresses_the_fast_way() -> None:
    values = [value.strip() for value in column("email")]
    assert sum(normalize_email._fast(value) is not None for value in values) / len(values) > 0.95


# --- normalize_url --------------------------------------------------------------------------------

ODD_URLS = [
    "Acme.com", "https://WWW.Acme.com/", "HTTPS://acme.com", "Http://acme.com:80/", "http://acme.com:443/",
    "https://acme.com:443", "https://acme.com:0/", "https://acme.com:65535", "https://acme.com:65536",
    "https://acme.com:", "https://acme.com:/x", "https://acme.com:abc", "https://acme.com:８０", "acme.com:8080",
    "acme.com:99999", "//acme.co.uk/x/", "///acme.com", "http:/acme.com", "http:acme.com", "https://",
    "https://.", "https://..", "https://acme.com.", "https://acme.com..", "https://.acme.com", "https://user:pw@acme.com",
    "user@acme.com", "https://@acme.com", "http://127.0.0.1:8080/x", "http://[::1]/", "http://[::1]:8080",
    "http://[::1", "http://::1]/", "http://[fe80::1%25eth0]/", "http://[v1.fe]/", "http://1.2.3.4.5/",
    "http://999.1.1.1/", "http://01.1.1.1/", "https://bücher.de/Über", "https://xn--bcher-kva.de",
    "https://BÜCHER.de", "https://例え.jp", "https://a_b.acme.com", "https://-bad-.com", "https://a.-b.com",
    "https://acme.com/path?q=1#frag", "https://acme.com/?#", "https://acme.com?x#y?z", "https://acme.com#a?b",
    "https://acme.com/a#b/c?d", "https://acme.com/Some%20Path", "https://acme.com/über?ä=ö", "https://acme.com/\x7f",
    "\x01acme.com", "acme.com\x01", "https://acme\x00.com", "ftp://acme.com", "mailto:info@acme.com",
    "javascript:alert(1)", "a+b://acme.com", "1http://acme.com", "https:://acme.com", "localhost", "localhost:8080",
    "www.", "www.com", "https://www.com", "http://shop.acme.com.au/path?x=1", "WWW.ACME.CO.UK", "acme", "co.uk",
    "https://acme.com\u3000", "acme.com/about\u00a0us", "acme.com\u2028x", "acme.com\x1cx", "acme.com\x85x",
    "https://ａｃｍｅ.com", "https://acme．com", "https://a℀b.com", "%41cme.com", "https://acme.com:80:80",
    "https://[::1]:99999", "https://" + "a" * 64 + ".com", "https://" + "a" * 63 + ".com",
]


def url_cases() -> list[str]:
    rng = random.Random(15)
    cases = [value.strip() for value in column("website")] + ODD_URLS
    parts = [*"abcXY09.-_:/?#@[]%+~", "é", "ü", "用", "\u00a0", "\x1c", "ｘ", "．", "xn--", "www.", "http://",
             "https://", "HTTP://", "//", ":80", ":443", ":8080", ":99999", "::1", "127.0.0.1", "[::1]", "co.uk",
             "com", ".com.au", "localhost", "ftp://", "mailto:", "acme", "?q=1", "#top"]
    cases += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 8))) for _ in range(8000)]
    return cases


def test_normalize_url_reads_every_value_as_before() -> None:
    step = NormalizeUrl(ColumnParams(column="w"), "s")
    cases = [(value,) for value in url_cases() if value]
    assert len(cases) > 8000
    assert differences(step.parse, plain.url, cases) == []


def test_the_plain_split_is_urlsplits() -> None:
    values = url_cases()
    plain_ones = 0
    for value in values:
        has_scheme = bool(normalize_url._HAS_SCHEME.match(value))
        if normalize_url._SPACE.search(value):
            continue
        fast = normalize_url._split_plain(value, has_scheme)
        if fast is not normalize_url._NOT_PLAIN:
            plain_ones += 1
            assert fast == normalize_url._split(value, has_scheme), value
    assert plain_ones > 3000
    websites = [value.strip() for value in column("website")]
    taken = sum(normalize_url._split_plain(v, bool(normalize_url._HAS_SCHEME.match(v))) is not normalize_url._NOT_PLAIN
                for v in websites)
    assert taken / len(websites) > 0.95


def test_the_whitespace_pattern_is_str_isspace() -> None:
    assert [c for c in every_character() if bool(normalize_url._SPACE.search(c)) != c.isspace()] == []


# --- clean_company_name ---------------------------------------------------------------------------


def name_cases() -> list[str]:
    rng = random.Random(16)
    cases = [value for value in column("name") if value.strip()] + [name for name, _, _ in NAMES]
    terms = sorted({term for table in (terms_by_type, terms_by_country) for ts in table.values() for term in ts})
    words = ["Acme", "ACME", "acme", "Müller", "Bank", "of", "&", "and", "Co", "Co.", "CO", "co", "The", "de",
             "S.A.B.", "C.V.", "Sr.", "Inc.", "Ltd", "Ltd.,", "(UK)", "-", "...", "東京", "ООО", "Ромашка", "Ab", "Sa",
             "3M", "O'Neil", "Société", "ÉTÉ", "x", "St.", "Orange", "A/S", ",", "Ñandú", "ǅemal", "ΑΘΗΝΑ", "Straße"]
    for _ in range(6000):
        name = " ".join(rng.choice(words + terms) for _ in range(rng.randint(1, 6)))
        roll = rng.random()
        cases.append(name.upper() if roll < 0.2 else name.lower() if roll < 0.4 else name)
    # every pair of short words (connectors, punctuation, a name) before each kind of legal form
    short = ["The", "of", "de", "and", "&", "-", "...", ",", "Acme", "Orange", "Sr."]
    forms = ["Ltd", "Ltd.", "GmbH", "Co", "Co.", "CO", "SA", "Sa", "S.A.", "Inc.", "& Co", "and Co.", "Co., Ltd.",
             "GmbH & Co. KG", "S.A.B. de C.V.", "de C.V.", "A/S", "AB", "ООО"]
    for first in short:
        for second in short:
            for form in forms:
                name = f"{first} {second} {form}"
                cases += [name, name.upper(), name.lower(), f"{second} {form}"]
    return cases


def test_clean_company_name_cleans_every_name_as_before() -> None:
    step = CleanCompanyName(ColumnParams(column="n"), "s")
    cases = [(name,) for name in name_cases() if name.strip()]
    assert len(cases) > 9000
    assert differences(step.parse, plain.company_name, cases) == []
    assert differences(clean_company_name.split_legal_form, plain.split_legal_form,
                       [(" ".join(name.split()),) for (name,) in cases[-6000:]]) == []


def test_the_alphanumeric_pattern_is_str_isalnum() -> None:
    pattern = clean_company_name._ALNUM
    assert [c for c in every_character() if bool(pattern.search(c)) != c.isalnum()] == []


def test_latin_is_decided_as_by_the_unicode_names() -> None:
    letters = [c for c in every_character() if c.isalpha()]
    rng = random.Random(17)
    texts = letters + ["".join(rng.choice(letters[:3000]) for _ in range(5)) for _ in range(3000)] + ["", "A1 b", "ÉTÉ"]
    assert [t for t in texts if clean_company_name._latin(t) != plain._latin(t)] == []


# --- the batches around them ----------------------------------------------------------------------


@pytest.mark.parametrize(("step", "parse", "values"), [
    (NormalizeEmail(ColumnParams(column="c"), "s"), plain.email, lambda: column("email")[:3000]),
    (NormalizeUrl(ColumnParams(column="c"), "s"), plain.url, lambda: column("website")[:3000]),
    (CleanCompanyName(ColumnParams(column="c"), "s"), plain.company_name, lambda: column("name")[:3000]),
], ids=["normalize_email", "normalize_url", "clean_company_name"])
def test_column_steps_batch_as_before(step: Any, parse: Callable[[str], Mapping[str, Any]],
                                      values: Callable[[], list[str]]) -> None:
    batch = values() + [None, "", "   ", "\t", *values()[:40], *[f" {v} " for v in values()[:40]]]
    new = step.outputs_of(batch)
    old = plain.column_outputs(parse, list(step.outputs), batch)
    assert {suffix: list(new[f"c_{suffix}"]) for suffix in old} == old


def test_the_oracle_is_the_code_that_was_replaced() -> None:
    """plain_paths.py is the old code: on the values the existing tests pin, it gives their answers."""
    assert plain.phone("0033 1 42 68 53 00", None) == ("+33142685300", True, "FR")
    assert plain.email("Ünïcode@bücher.de") == {"normalized": "ünïcode@bücher.de", "domain": "bücher.de", "valid": True}
    assert plain.url("http://shop.acme.com.au:80/a/b/?x=1#top") == {
        "url": "http://shop.acme.com.au/a/b/?x=1", "host": "shop.acme.com.au", "domain": "acme.com.au", "valid": True}
    assert all(plain.company_name(name) == {"clean": clean, "legal_suffix": suffix} for name, clean, suffix in NAMES)
