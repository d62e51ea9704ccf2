"""Which network addresses a provider call may reach: public ones only, unless allowed by name.

Shared by the spec's early check (`providers.check_host`) and the connection guard
(`pipelines.inference.safe_transport`), so that both refuse the same addresses with the same words.
IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by
the IPv4 address they reach: `::ffff:127.0.0.1` is loopback, whatever Python's `is_global` says
of it in this version.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT (RFC 6598)
_COMPATIBLE = ipaddress.ip_network("::/96")  # IPv4-compatible (deprecated, RFC 4291)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): a private network's


def embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """(form, IPv4 address) when an IPv6 address reaches an IPv4 one, else None."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    low = IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _COMPATIBLE and not (ip.is_loopback or ip.is_unspecified):
        return "IPv4-compatible", low
    if ip in _NAT64:
        return "NAT64", low
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why a provider call may not connect to `ip` ("a loopback address", ...); None when it is public."""
    if isinstance(ip, IPv6Address):
        if ip.scope_id:  # fe80::1%eth0: only link-local addresses carry a zone
            return "a link-local address"
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            form, v4 = embedded
            why = refusal(v4)
            return f"the {form} form of {v4}, {why}" if why else None
        if ip in _LOCAL_NAT64:
            return "a local-use NAT64 address (64:ff9b:1::/48), which reaches a private network"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _SHARED, "a shared (CGNAT) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for refused, why in checks if refused), None)


def parse_address(text: str) -> IPAddress | None:
    """An IP address written as a host ('127.0.0.1', '::1', '[::1]'), or None for a name."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
