"""normalize_email: an email address checked for syntax (never DNS) and lower-cased.

Most addresses are ASCII, with one "@" and a plain dot-atom before it. For those,
email_validator's `validate_email` checks the part before the "@" with one pattern and the part
after it with `validate_email_domain_name` (the costly part: Unicode and IDNA checks), then the
length of the whole; `_fast` does exactly that with the domain's result kept per distinct domain.
Every other address goes through `validate_email` as before; tests/unit/augmenters/test_fast_paths.py
checks both against the plain library call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import email_validator
import pyarrow as pa
from email_validator import validate_email
from email_validator.rfc_constants import DNS_LABEL_LENGTH_LIMIT, DOMAIN_MAX_LENGTH, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import INVALID, ColumnAugmenter, ColumnParams

# Two labels or more of ASCII letters, digits and inner hyphens: no dot or hyphen first or last, no
# empty label, no dot next to a hyphen.
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


@register("normalize_email")
class NormalizeEmail(ColumnAugmenter):
    """Checks email address syntax without any network lookup and normalises valid ones
    (Unicode kept, domain in its Unicode form, everything lower-cased).

    Reads: `column` (string).
    Adds: `{prefix}_normalized`, `{prefix}_domain`, `{prefix}_valid` (bool).
    """

    Params = ColumnParams
    outputs = {"normalized": pa.string(), "domain": pa.string(), "valid": pa.bool_()}

    def parse(self, value: str) -> Mapping[str, Any]:
        fast = _fast(value)
        return fast if fast is not None else _parse_library(value)


def _parse_library(value: str) -> Mapping[str, Any]:
    try:
        email = validate_email(value, check_deliverability=False)
    except ValueError:  # EmailNotValidError, and UnicodeError from odd input, are ValueErrors
        return INVALID
    # Local parts are case-sensitive by the RFC but not in practice; lower-case for matching.
    return {"normalized": email.normalized.lower(), "domain": email.domain.lower(), "valid": True}


def _fast(value: str) -> Mapping[str, Any] | None:
    """`_parse_library(value)` for an ASCII address of one "@" after a dot-atom, with
    email_validator's default options; None for any other value.

    For such an address validate_email splits at the "@" (no display name, no quotes: the
    dot-atom has no `<` or `"`), keeps the local part as written (it matches DOT_ATOM_TEXT; ASCII
    is its own NFC form; only STRICT would check its length), validates the domain with
    validate_email_domain_name unless it is empty or a [literal], and checks the lengths of the
    address as given, normalised, and in ASCII. Lower-casing the mailbox names of RFC 2142 changes
    nothing once all is lower-cased.
    """
    if not value.isascii() or value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if not DOT_ATOM_TEXT.match(local) or "[" in domain or email_validator.STRICT:
        return None
    if not domain:
        return INVALID
    names = _domain(domain, email_validator.TEST_ENVIRONMENT, email_validator.GLOBALLY_DELIVERABLE)
    if names is None:
        return INVALID
    unicode_domain, ascii_domain = names
    normalized = f"{local}@{unicode_domain}"
    if len(value) > EMAIL_MAX_LENGTH or len(normalized.encode("utf8")) > EMAIL_MAX_LENGTH \
            or len(local) + 1 + len(ascii_domain) > EMAIL_MAX_LENGTH:
        return INVALID
    return {"normalized": normalized.lower(), "domain": unicode_domain.lower(), "valid": True}


@lru_cache(maxsize=1 << 16)
def _domain(domain: str, test_environment: bool, globally_deliverable: bool) -> tuple[str, str] | None:
    """(Unicode form, ASCII form) of a valid email domain, or None: validate_email_domain_name,
    once per distinct domain and options (email_validator's list of special-use names, which it
    also reads, is taken as fixed)."""
    if globally_deliverable and not test_environment:
        plain = _plain_domain(domain)
        if plain is not None:
            return plain, plain
    try:
        names = validate_email_domain_name(domain, test_environment=test_environment,
                                           globally_deliverable=globally_deliverable)
    except ValueError:
        return None
    return names["domain"], names["ascii_domain"]


def _plain_domain(domain: str) -> str | None:
    """The domain lower-cased where validate_email_domain_name (globally deliverable, not a test
    environment) surely accepts it as that, in both forms; None where it has to look.

    For an ASCII host name (`_HOSTNAME`) its checks come down to these: every character is allowed,
    safe and UTS #46-valid, UTS #46 maps ASCII by lower-casing it (and NFC keeps ASCII), the dot
    and hyphen rules hold, the name is already in ASCII (DOT_ATOM_TEXT_HOSTNAME), then the lengths,
    the "ab--" rule, a dot and a last letter (a top-level domain), no special-use name, and no
    "xn--" (which would send it to IDNA decoding).
    """
    if len(domain) > DOMAIN_MAX_LENGTH or not _HOSTNAME.fullmatch(domain):
        return None
    name = domain.lower()
    if "xn--" in name or not name[-1].isalpha():
        return None
    for label in name.split("."):
        if len(label) > DNS_LABEL_LENGTH_LIMIT or label[2:4] == "--":
            return None
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if name == special or name.endswith("." + special):
            return None
    return name
