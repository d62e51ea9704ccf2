"""normalize_url: a website address, normalised, with its host and registered domain."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import tldextract

from pipelines.augmenters.registry import register
from pipelines.augmenters.single_column import ColumnAugmenter, ColumnParams

_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"^(?!-)[\w-]{1,63}(?<!-)$")  # \w: internationalised labels stay as written
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        if any(c.isspace() for c in value):  # "acme.com/about us": not a URL, and not ours to guess
            return {"valid": False}
        has_scheme = bool(_HAS_SCHEME.match(value))
        try:
            parts = urlsplit(value if has_scheme else "https://" + value.removeprefix("//"))
            port = parts.port  # raises ValueError for a port that is not a number in range
        except ValueError:
            return {"valid": False}
        scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
        # Without a scheme, "x@y.com" or "mailto:x@y.com" is an email address, not a website.
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
            "host": host.removeprefix("www.") if domain and host != domain else host,  # www.com stays
            "domain": domain,
            "valid": True,
        }
