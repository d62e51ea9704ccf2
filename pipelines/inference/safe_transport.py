"""Provider connections that reach only public addresses, checked when the socket is opened.

A check before the call (`providers.check_host`) is not enough: the name can resolve to a public
address for the check and to a private one a moment later, when the client resolves it again
(DNS rebinding). Here the host is resolved once, every address is checked, and the socket is
opened to the checked address itself. httpcore still believes it connects to the host name, so
the Host header, TLS SNI and certificate verification stay on the name, and its connection pool
stays keyed by name. A host is allowed when the provider's `allow_hosts` names it or the address
it resolves to; one pool per allow-list, so a connection one provider may open is never reused by
another that may not.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from pipelines.spec.addresses import IPAddress, parse_address, refusal

Resolve = Callable[[str, int], Awaitable[list[str]]]


class RefusedAddress(Exception):
    """A connection the guard did not open: not retried, the record's error says why."""

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host, self.address, self.why = host, address, why
        where = host if host == address else f"{host} at {address}"
        super().__init__(f"refused to connect to {where}: {why}; list {host} in the provider's allow_hosts to call it")


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the resolver's order of preference."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, opening TCP sockets only to checked addresses."""

    def __init__(self, allow_hosts: Iterable[str] = (), *, resolver: Resolve = resolve,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_hosts = frozenset(_host_key(h) for h in allow_hosts)
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self._checked(host, port, timeout)
        error: Exception | None = None
        for address in addresses:  # pinned: the checked address, never the name again
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("provider calls do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    async def _checked(self, host: str, port: int, timeout: float | None) -> list[str]:
        """Every address of `host`, each one allowed; one that is not refuses them all (a name
        answering both a public and a private address is a rebinding attempt, or a mistake)."""
        literal = parse_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                with anyio.fail_after(timeout):
                    addresses = await self.resolver(host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
            if not addresses:
                raise httpcore.ConnectError(f"{host} resolves to no address")
        if _host_key(host) in self.allow_hosts:
            return addresses
        for address in addresses:
            ip = parse_address(address)
            if ip is None:
                raise RefusedAddress(host, address, "not an IP address")
            why = _refused(ip, self.allow_hosts)
            if why:
                raise RefusedAddress(host, str(ip), why)
        return addresses


def _refused(ip: IPAddress, allow_hosts: frozenset[str]) -> str | None:
    return None if _host_key(str(ip)) in allow_hosts else refusal(ip)


def _host_key(host: str) -> str:
    """Hosts compared as the URL writes them, without IPv6 brackets, case and a zone's scope."""
    host = host.strip().strip("[]").lower().rstrip(".")
    ip = parse_address(host)
    return str(ip) if ip is not None else host


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a GuardedBackend. Proxies from the environment are not used: a proxy
    would make the checked address the proxy's, not the provider's."""

    def __init__(self, allow_hosts: Iterable[str] = (), *, resolver: Resolve = resolve,
                 limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        ssl_context = ssl_context or default_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        # httpx offers no parameter for the network backend: its pool is rebuilt with the same
        # settings (tests/unit/inference/test_safe_transport.py sees a refused connection through it).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,  # verified against the host name (httpcore passes it as server_hostname)
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_hosts, resolver=resolver),
        )


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's verifying context, built once: loading the CA bundle takes a while, and a context
    serves any number of connections."""
    return httpx.create_ssl_context()


def guarded_client(allow_hosts: Iterable[str] = (), *, resolver: Resolve = resolve,
                   ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """A pooled client whose every connection goes through the guard; redirects are not followed
    (a redirect could point anywhere, and the guard would have to judge it without the provider's say)."""
    transport = GuardedTransport(allow_hosts, resolver=resolver, ssl_context=ssl_context)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
