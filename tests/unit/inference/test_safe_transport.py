"""The connection guard: which addresses a provider call may reach, checked when the socket opens,
pinned to the checked address (DNS rebinding), with the Host header and TLS on the host name."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from augment_core.ratelimit import Limits
from devtools.fake_openai import FakeOpenAI
from pipelines.inference.client import Request, call
from pipelines.inference.permits import LocalPermits
from pipelines.inference.safe_transport import GuardedBackend, RefusedAddress, guarded_client
from pipelines.spec.addresses import refusal


# --- which addresses -----------------------------------------------------------------------------
@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("169.254.169.254", "a link-local address"),  # cloud metadata
    ("fe80::1", "a link-local address"),
    ("100.64.0.1", "a shared (CGNAT) address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("ff0e::1", "a multicast address"),
    ("240.0.0.1", "a private address"),
    ("198.18.0.1", "a private address"),  # benchmarking
    ("::ffff:127.0.0.1", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "the IPv4-mapped form of 169.254.169.254, a link-local address"),
    ("::127.0.0.1", "the IPv4-compatible form of 127.0.0.1, a loopback address"),
    ("::10.0.0.1", "the IPv4-compatible form of 10.0.0.1, a private address"),
    ("64:ff9b::7f00:1", "the NAT64 form of 127.0.0.1, a loopback address"),
    ("64:ff9b::a9fe:a9fe", "the NAT64 form of 169.254.169.254, a link-local address"),
    ("64:ff9b:1::a00:1", "a local-use NAT64 address (64:ff9b:1::/48), which reaches a private network"),
    ("2002:7f00:1::1", "the 6to4 form of 127.0.0.1, a loopback address"),
    ("2002:c0a8:101::1", "the 6to4 form of 192.168.1.1, a private address"),
])
def test_non_public_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", [
    "8.8.8.8", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8",
])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


# --- the backend: checked, then pinned -----------------------------------------------------------
class Recorder(httpcore.AsyncNetworkBackend):
    """Where sockets would be opened, without opening any."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        self.opened.append((host, port))
        return httpcore.AsyncMockStream([])

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise AssertionError("not used")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def resolver(*answers: list[str]) -> Any:
    """A DNS that gives each answer in turn (the last one from then on)."""
    given = list(answers)

    async def resolve(host: str, port: int) -> list[str]:
        return given.pop(0) if len(given) > 1 else given[0]
    return resolve


def connect(backend: GuardedBackend, host: str, port: int = 443) -> Any:
    return asyncio.run(backend.connect_tcp(host, port, timeout=5))


def test_the_socket_goes_to_the_checked_address_not_the_name() -> None:
    """A rebinding DNS answers a public address for the first connection and loopback for the
    next: the first socket is opened to the checked public address itself (the name is never
    resolved again), and the second is refused before any socket is opened."""
    inner = Recorder()
    backend = GuardedBackend(resolver=resolver(["93.184.216.34"], ["127.0.0.1"]), inner=inner)
    connect(backend, "rebind.example")
    assert inner.opened == [("93.184.216.34", 443)]
    with pytest.raises(RefusedAddress) as caught:
        connect(backend, "rebind.example")
    assert str(caught.value) == ("refused to connect to rebind.example at 127.0.0.1: a loopback address;"
                                 " list rebind.example in the provider's allow_hosts to call it")
    assert inner.opened == [("93.184.216.34", 443)]


def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    inner = Recorder()
    backend = GuardedBackend(resolver=resolver(["93.184.216.34", "::ffff:10.0.0.7"]), inner=inner)
    with pytest.raises(RefusedAddress, match="at ::ffff:a00:7: the IPv4-mapped form of 10.0.0.7, a private address"):
        connect(backend, "mixed.example")
    assert inner.opened == []


def test_allow_hosts_names_the_host_or_its_address() -> None:
    inner = Recorder()
    connect(GuardedBackend(["Internal.Example"], resolver=resolver(["10.0.0.5"]), inner=inner), "internal.example")
    connect(GuardedBackend(["10.0.0.5"], resolver=resolver(["10.0.0.5"]), inner=inner), "other.example")
    connect(GuardedBackend(["[::1]"], inner=inner), "::1")
    assert inner.opened == [("10.0.0.5", 443), ("10.0.0.5", 443), ("::1", 443)]
    with pytest.raises(RefusedAddress):  # another private address of the same name is not allowed
        connect(GuardedBackend(["10.0.0.5"], resolver=resolver(["10.0.0.6"]), inner=inner), "other.example")


def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")
    with pytest.raises(httpcore.ConnectError, match="cannot resolve nowhere.example"):
        connect(GuardedBackend(resolver=nxdomain, inner=Recorder()), "nowhere.example")


# --- through httpx: Host header and TLS stay on the name ------------------------------------------
async def _serve_once(handler: Any, ssl_context: ssl.SSLContext | None = None) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


def test_the_host_header_keeps_the_name_while_the_socket_is_pinned() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def main() -> httpx.Response:
        server, port = await _serve_once(handler)
        async with server, guarded_client(["127.0.0.1"], resolver=resolver(["127.0.0.1"])) as client:
            return await client.get(f"http://provider.example:{port}/v1/x")

    assert asyncio.run(main()).status_code == 200
    assert b"host: provider.example:" in seen[0].lower()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context for provider.example, client context trusting only its test CA)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def name(text: str) -> Any:
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("provider.example")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("provider.example")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "leaf.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    yield server, client


def test_tls_is_negotiated_and_verified_with_the_name(certificates: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """The socket goes to 127.0.0.1, yet SNI says provider.example and the certificate is checked
    against provider.example: it passes for that name and fails for another name on the same address."""
    server_tls, client_tls = certificates
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, server_name, context: names.append(server_name)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        writer.close()

    async def get(host: str) -> int:
        server, port = await _serve_once(handler, server_tls)
        async with server, guarded_client(["127.0.0.1"], resolver=resolver(["127.0.0.1"]),
                                          ssl_context=client_tls) as client:
            return (await client.get(f"https://{host}:{port}/")).status_code

    assert asyncio.run(get("provider.example")) == 200
    assert names == ["provider.example"]
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        asyncio.run(get("other.example"))


# --- through the client: refused at once, with its reason ---------------------------------------
FAKE_PROVIDER: dict[str, Any] = {}  # the `fake` server of tests/conftest.py


def test_a_call_to_a_private_address_is_refused_at_once_without_retries(fake: FakeOpenAI) -> None:
    fake.reset()
    permits = LocalPermits("safe-transport-test", Limits())
    request = Request("POST", f"{fake.base_url}/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    reply = asyncio.run(call(request, permits, max_retries=3))
    assert not reply.ok and reply.attempts == 1 and reply.tried == []
    assert reply.error == ("refused to connect to 127.0.0.1: a loopback address;"
                           " list 127.0.0.1 in the provider's allow_hosts to call it")
    assert fake.stats()["requests"] == 0
    allowed = asyncio.run(call(request, permits, allow_hosts=["127.0.0.1"]))
    assert allowed.ok and fake.stats()["requests"] == 1
