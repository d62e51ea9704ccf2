"""normalize_url: a website address, normalised, with its host and registered domain.

Speed without changing an output (tests/unit/augmenters/test_fast_paths.py checks against the plain
per-value code): an address whose netloc is a plain host name and port is split without urlsplit
(`_split_plain`, exactly what urlsplit gives it), and what a host gives (an IP address, or its
registered domain by the public suffix list, and whether its labels are well formed) is worked
out once per distinct host (`_host`), however many addresses share it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import tldextract

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import INVALID, ColumnAugmenter, ColumnParams

_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$")  # \w: internationalised labels stay as written
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SPACE = re.compile(r"\s")  # str.isspace's characters, exactly (both are Py_UNICODE_ISSPACE)
_IPV4_CHARS = frozenset("0123456789.")


@cache
def _extract() -> tldextract.TLDExtract:
    # The bundled public suffix snapshot only: no fetch, no cache folder, built once per process.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@register("normalize_url")
class NormalizeUrl(ColumnAugmenter):
    """Normalises website addresses: https added when the scheme is missing, host lower-cased,
    credentials, default ports, the fragment and a lone "/" path dropped. An IP address host is
    valid and has no domain; a host without a public suffix ("localhost") is invalid.

    Reads: `column` (string).
    Adds: `{prefix}_url`, `{prefix}_host` (lower-case, without "www."), `{prefix}_domain`
    (registered domain, e.g. shop.acme.com.au -> acme.com.au), `{prefix}_valid` (bool).
    """

    Params = ColumnParams
    outputs = {"url": pa.string(), "host": pa.string(), "domain": pa.string(), "valid": pa.bool_()}

    def setup(self) -> None:
        _extract()

    def parse(self, value: str) -> Mapping[str, Any]:
        if _SPACE.search(value):  # "acme.com/about us": not a URL, and not ours to guess
            return INVALID
        has_scheme = bool(_HAS_SCHEME.match(value))
        parts = _split_plain(value, has_scheme)
        if parts is _NOT_PLAIN:
            parts = _split(value, has_scheme)
        if parts is None:
            return INVALID
        scheme, netloc, host, port, path, query = parts
        # Without a scheme, "x@y.com" or "mailto:x@y.com" is an email address, not a website.
        if scheme not in _DEFAULT_PORTS or not host or (not has_scheme and "@" in netloc):
            return INVALID
        ip_version, domain, valid = _host(host)
        if not valid:
            return INVALID
        netloc = f"[{host}]" if ip_version == 6 else host
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
        path = "" if path == "/" else path
        query = f"?{query}" if query else ""
        return {
            "url": f"{scheme}://{netloc}{path}{query}",
            "host": host.removeprefix("www.") if domain and host != domain else host,  # www.com stays
            "domain": domain,
            "valid": True,
        }


# (scheme lower-cased, netloc, host lower-cased without a final dot, port, path, query) of a value.
Parts = tuple[str, str, str, int | None, str, str]
_NOT_PLAIN: Any = object()
# A netloc of ASCII letters, digits, dots and hyphens, then perhaps ":" and digits, up to the end or
# the first "/", "?" or "#": no credentials, brackets, zone or other characters to read.
_PLAIN_NETLOC = re.compile(r"([A-Za-z0-9.-]*)(?::([0-9]*))?(?=[/?#]|\Z)")


def _split(value: str, has_scheme: bool) -> Parts | None:
    """The parts of the value read with urlsplit (https:// put first where there is no scheme),
    or None where it, or its port, raises."""
    try:
        parts = urlsplit(value if has_scheme else "https://" + value.removeprefix("//"))
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts.scheme.lower(), parts.netloc, (parts.hostname or "").rstrip("."), port, parts.path, parts.query


def _split_plain(value: str, has_scheme: bool) -> Parts | None:
    """`_split(value, has_scheme)` where the netloc is plain (`_PLAIN_NETLOC`), without urlsplit;
    _NOT_PLAIN for any other value.

    What urlsplit reads here: the text starts with the scheme's first letter and holds no
    whitespace, so there is nothing to strip or remove; the scheme ends at the first ":" (the one
    of "://": `_HAS_SCHEME`'s characters are urlsplit's scheme characters); the netloc runs to the
    first "/", "?" or "#" and, plain, has no brackets to check and is ASCII; the fragment goes from
    the first "#", the query from the first "?" before it. Its port is the digits after ":" (none
    if empty), out of range above 65535; its host name the part before ":", lower-cased.
    """
    if has_scheme:
        end = value.index(":")
        scheme, rest = value[:end].lower(), value[end + 3:]
    else:
        scheme, rest = "https", value.removeprefix("//")
    match = _PLAIN_NETLOC.match(rest)
    if match is None:
        return _NOT_PLAIN
    name, digits = match.group(1, 2)
    port = int(digits) if digits else None
    if port is not None and port > 65535:
        return None
    tail = rest[match.end():]
    path, _, query = tail.partition("#")[0].partition("?")
    return scheme, rest[:match.end()], name.lower().rstrip("."), port, path, query


@lru_cache(maxsize=1 << 16)
def _host(host: str) -> tuple[int | None, str | None, bool]:
    """(IP version or None, registered domain or None, valid) of a host: an IP address is valid
    without a domain; a name needs a registered domain and well-formed labels."""
    # Without ":" only an IPv4 address (digits and dots) can be one: spare the others the raise.
    if ":" in host or _IPV4_CHARS.issuperset(host):
        try:
            return ipaddress.ip_address(host).version, None, True
        except ValueError:
            pass
    domain = _extract()(host).top_domain_under_public_suffix
    if not domain or not all(_LABEL.match(label) for label in host.split(".")):
        return None, None, False
    return None, domain, True
