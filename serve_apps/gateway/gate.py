"""`Gate`: a replica's view of who is asking — API keys and login sessions checked against the
metadata store, briefly cached so that a revoked key or an ended session stops working on every
replica within `auth_cache_seconds` — and the quotas every replica shares."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

import ray

from augment_core.identity import SESSION_COOKIE, Identity, Principal, digest
from augment_core.quotas import KeyQuotas, LeasedRates, Quotas, RedisQuotas
from augment_core.settings import Settings
from augment_core.store import open_store

T = TypeVar("T")
COOKIE = SESSION_COOKIE
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
QUOTA_RETRY_SECONDS = 5  # what a refusal for an unanswering quota store asks the caller to wait
log = logging.getLogger(__name__)


class QuotaUnavailable(Exception):
    """The shared quota store (Redis, or the cluster's actor) did not answer, so a limit cannot be
    checked: the request is refused (503), because a limit that fails open limits nothing. The
    message names no host and quotes no driver error; the replica's log has the error's type."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} cannot be checked right now (the quota store does not answer); try again shortly")


class Gate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._quotas: Quotas | None = None
        self._rates: LeasedRates | None = None  # request rates on a shared store, booked a few at a time

    def identity(self) -> Identity:
        return Identity(open_store(self.settings))

    def from_key(self, secret: str) -> Principal | None:
        return self._cached("key:" + digest(secret), lambda: self.identity().resolve_key(secret))

    def from_session(self, token: str) -> Principal | None:
        return self._cached("session:" + digest(token), lambda: self.identity().resolve_session(token))

    def forget_session(self, token: str) -> None:
        """After a logout here: this replica refuses the session at once, the others within the cache time."""
        with self._lock:
            self._cache.pop("session:" + digest(token), None)

    def known_key(self, secret: str) -> tuple[bool, Principal | None]:
        """(True, what from_key answers) when this replica checked the key within auth_cache_seconds;
        (False, None) when only the store can say. No I/O: for the event loop."""
        return self._fresh("key:" + digest(secret))

    def known_session(self, token: str) -> tuple[bool, Principal | None]:
        """As known_key, for a login session."""
        return self._fresh("session:" + digest(token))

    def _fresh(self, key: str) -> tuple[bool, Principal | None]:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def _cached(self, key: str, resolve: Callable[[], Principal | None]) -> Principal | None:
        now = time.monotonic()
        fresh, principal = self._fresh(key)
        if fresh:
            return principal
        principal = resolve()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.settings.auth_cache_seconds, principal)
        return principal

    # quotas ---------------------------------------------------------------------------------
    def quotas(self) -> Quotas:
        """Redis when configured, else the cluster's named actor; one process's own counts only
        where there is no cluster (tests of the app in-process)."""
        if self._quotas is None:
            if self.settings.redis_url:
                self._quotas = RedisQuotas(self.settings.redis_url)
            elif ray.is_initialized():
                from actors.key_quotas import ActorQuotas

                self._quotas = ActorQuotas()
            else:
                self._quotas = KeyQuotas()
            # A store across the network is asked for rates a few requests at a time (LeasedRates);
            # one in this process is asked every time, as cheap as a lease.
            self._rates = None if isinstance(self._quotas, KeyQuotas) else LeasedRates(self._quotas)
        return self._quotas

    def _checked(self, what: str, who: str, ask: Callable[[Quotas], T]) -> T:
        """`ask` of the quota store; QuotaUnavailable (logged without the driver's words) when it
        cannot answer: a limit that fails open limits nothing."""
        try:
            return ask(self.quotas())
        except Exception as exc:  # noqa: BLE001 - Redis or actor errors of any kind
            log.warning("%s not checked for %s: %s", what, who, type(exc).__name__)
            raise QuotaUnavailable(what) from None

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        """Seconds to wait (0: go); QuotaUnavailable when the quota store cannot answer."""
        def ask(quotas: Quotas) -> float:
            rates = self._rates
            return rates.admit(who, per_minute, burst) if rates is not None else quotas.admit(who, per_minute, burst)

        return self._checked("the request rate", who, ask)

    def admit_local(self, who: str) -> bool:
        """Let a request of `who` through on rate this replica booked already: True, or False when
        only `admit` (a round trip) can say. No I/O: for the event loop."""
        rates = self._rates
        return rates is not None and rates.take_local(who)

    def running_low(self, who: str) -> bool:
        """Whether the rate this replica booked for `who` is nearly used up (time for `book_ahead`). No I/O."""
        rates = self._rates
        return rates is not None and rates.running_low(who)

    def book_ahead(self, who: str, per_minute: int, burst: int) -> float:
        """Book `who`'s next share of the rate before this one runs out: 0, or the seconds until the
        rate allows one more; QuotaUnavailable as admit."""
        def ask(quotas: Quotas) -> float:
            rates = self._rates
            return rates.book_ahead(who, per_minute, burst) if rates is not None else 0.0

        return self._checked("the request rate", who, ask)

    def open_stream(self, who: str, cap: int) -> bool:
        """Whether `who` may open one more event stream (and it is counted); QuotaUnavailable as admit."""
        return self._checked("the open event streams", who, lambda q: q.open_stream(who, cap))

    def close_stream(self, who: str) -> None:
        try:
            self.quotas().close_stream(who)
        except Exception as exc:  # noqa: BLE001
            log.warning("closed stream not counted for %s: %s", who, type(exc).__name__)

    def spent(self, who: str, day: str) -> float:
        """What `who` spent (and holds reserved) on providers on `day`; QuotaUnavailable as admit."""
        return self._checked("the daily provider spend", who, lambda q: q.spent(who, day))

    def reserve_spend(self, who: str, day: str, usd: float, cap: float) -> bool:
        """A reservation on `who`'s daily ledger; False past the cap and when the store cannot answer."""
        try:
            return self.quotas().reserve_spend(who, day, usd, cap)
        except Exception as exc:  # noqa: BLE001 - refused: no call is sent unaccounted
            log.warning("daily spend not reserved for %s: %s", who, type(exc).__name__)
            return False

    def settle_spend(self, who: str, day: str, reserved: float, spent: float) -> None:
        try:
            self.quotas().settle_spend(who, day, reserved, spent)
        except Exception as exc:  # noqa: BLE001 - the call happened; its cost is lost from the ledger, logged
            log.warning("daily spend of %.6f USD not booked for %s: %s", spent, who, type(exc).__name__)


def host_allowed(settings: Settings, host_header: str | None) -> bool:
    """Whether the Host header names one of the configured hosts (any port)."""
    names = settings.host_names
    if "*" in names:
        return True
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bool(name) and name in names


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether a browser's state-changing request came from our own pages: its Origin names the host
    it was sent to (without Origin, Sec-Fetch-Site must not say cross-site). A request carrying
    neither came from no browser, and cross-site request forgery needs a browser."""
    origin = headers.get("origin")
    if origin:
        return origin != "null" and urlsplit(origin).netloc.lower() == (headers.get("host") or "").lower()
    return headers.get("sec-fetch-site") in (None, "same-origin", "none")
