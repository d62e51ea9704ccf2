"""Per-caller request rates, open event streams and daily provider spend, counted once for every
replica of every app.

`KeyQuotas` is the logic (GCRA: each request books 60/rate seconds on the caller's clock, and a
caller may run `burst` requests ahead of it). The gateway uses it in one named actor on a cluster
(actors/key_quotas.py), or `RedisQuotas` when Redis is configured, never per process: a per-process
limit multiplies by the number of replicas.

The spend ledger works like a run's budget (pipelines/inference/budget.py): a provider call first
reserves the most it could cost, and is not sent when that would take the caller's spending of the
day (UTC, named by the caller: 'YYYY-MM-DD') past its cap; afterwards the reservation becomes the
real cost.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis


class Quotas(Protocol):
    def admit(self, who: str, per_minute: int, burst: int) -> float:
        """0 when the request may go; else the seconds to wait before the next one would."""

    def lease(self, who: str, per_minute: int, burst: int, want: int, returned: int = 0) -> tuple[int, float]:
        """Give back `returned` permits booked earlier and not used, then book up to `want` requests at
        once, as many as admit would let through now one after the other: (booked, 0.0), or (0, the
        seconds to wait) when not even one may go. `admit` is `lease(want=1)`."""

    def open_stream(self, who: str, cap: int) -> bool:
        """Count an event stream as open for `who`; False (counting nothing) when `cap` are open."""

    def close_stream(self, who: str) -> None: ...

    def reserve_spend(self, who: str, day: str, usd: float, cap: float) -> bool:
        """Reserve `usd` of `who`'s spending on `day`; False (reserving nothing) past `cap`."""

    def settle_spend(self, who: str, day: str, reserved: float, spent: float) -> None:
        """Turn a reservation into what the call really cost."""

    def spent(self, who: str, day: str) -> float:
        """What `who` spent and holds reserved on `day`."""


class KeyQuotas:
    """In memory: the state of the named actor (or of one process, in tests without a cluster)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tat: dict[str, float] = {}  # the theoretical arrival time of each caller's next request
        self.streams: dict[str, int] = {}
        self.spend: dict[tuple[str, str], list[float]] = {}  # (who, day) -> [spent, reserved]
        self.newest_day = ""

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        return self.lease(who, per_minute, burst, want=1)[1]

    def lease(self, who: str, per_minute: int, burst: int, want: int, returned: int = 0) -> tuple[int, float]:
        now = self.clock()
        interval = 60.0 / per_minute
        tat = max(self.tat.get(who, now), now)
        if returned > 0:  # as if those requests had never been booked
            tat = max(now, tat - returned * interval)
            self.tat[who] = tat
        allowed_at = tat + interval - max(burst, 1) * interval
        if allowed_at > now:
            return 0, allowed_at - now
        booked = max(1, min(want, 1 + int((now - allowed_at) / interval)))
        self.tat[who] = tat + booked * interval
        self._forget_idle(now)
        return booked, 0.0

    def _forget_idle(self, now: float) -> None:
        if len(self.tat) > 100_000:  # forget callers who are idle (their clocks are in the past)
            self.tat = {k: v for k, v in self.tat.items() if v > now}

    def open_stream(self, who: str, cap: int) -> bool:
        if self.streams.get(who, 0) >= cap:
            return False
        self.streams[who] = self.streams.get(who, 0) + 1
        return True

    def close_stream(self, who: str) -> None:
        left = self.streams.get(who, 0) - 1
        if left > 0:
            self.streams[who] = left
        else:
            self.streams.pop(who, None)

    def reserve_spend(self, who: str, day: str, usd: float, cap: float) -> bool:
        if day > self.newest_day:  # a new day: the ledgers before yesterday are done with
            self.newest_day = day
            yesterday = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
            self.spend = {k: v for k, v in self.spend.items() if k[1] >= yesterday}
        ledger = self.spend.setdefault((who, day), [0.0, 0.0])
        if ledger[0] + ledger[1] + usd > cap:
            return False
        ledger[1] += usd
        return True

    def settle_spend(self, who: str, day: str, reserved: float, spent: float) -> None:
        ledger = self.spend.setdefault((who, day), [0.0, 0.0])
        ledger[0] += spent
        ledger[1] = max(0.0, ledger[1] - reserved)

    def spent(self, who: str, day: str) -> float:
        ledger = self.spend.get((who, day), [0.0, 0.0])
        return ledger[0] + ledger[1]


# The same GCRA on Redis's clock, in one script so replicas cannot interleave between read and write.
# lease: give back ARGV[4] unused permits, then book up to ARGV[3] at once; {booked, wait}.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local returned = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if returned > 0 then
  tat = tat - returned * interval
  if tat < now then tat = now end
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
local allowed_at = tat + interval - burst * interval
if allowed_at > now then return {0, tostring(allowed_at - now)} end
local booked = math.min(want, 1 + math.floor((now - allowed_at) / interval))
if booked < 1 then booked = 1 end
tat = tat + booked * interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
return {booked, '0'}
"""
_OPEN = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
# The spend ledger: one hash per caller and day, {spent, reserved}, in USD.
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + reserved + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
_SETTLE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') - tonumber(ARGV[1])
if reserved < 0 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# A day's ledger is kept a day past its end, then Redis forgets it.
SPEND_TTL_SECONDS = 2 * 86400
# A replica that died with streams open leaves them counted until this long after the last change.
STREAM_COUNT_TTL_SECONDS = 3600


class RedisQuotas:
    def __init__(self, url: str, namespace: str = "augment:quota") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.namespace = namespace
        self._lease = self.client.register_script(_LEASE)
        self._open = self.client.register_script(_OPEN)
        self._reserve = self.client.register_script(_RESERVE)
        self._settle = self.client.register_script(_SETTLE)

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        return self.lease(who, per_minute, burst, want=1)[1]

    def lease(self, who: str, per_minute: int, burst: int, want: int, returned: int = 0) -> tuple[int, float]:
        booked, wait = self._lease(keys=[f"{self.namespace}:rate:{who}"],
                                   args=[60.0 / per_minute, max(burst, 1), max(1, want), max(0, returned)])
        return int(booked), float(wait)

    def open_stream(self, who: str, cap: int) -> bool:
        return bool(self._open(keys=[f"{self.namespace}:streams:{who}"], args=[cap, STREAM_COUNT_TTL_SECONDS]))

    def close_stream(self, who: str) -> None:
        key = f"{self.namespace}:streams:{who}"
        if int(self.client.decr(key)) <= 0:
            self.client.delete(key)

    def reserve_spend(self, who: str, day: str, usd: float, cap: float) -> bool:
        return bool(self._reserve(keys=[self._spend_key(who, day)], args=[repr(usd), repr(cap), SPEND_TTL_SECONDS]))

    def settle_spend(self, who: str, day: str, reserved: float, spent: float) -> None:
        self._settle(keys=[self._spend_key(who, day)], args=[repr(reserved), repr(spent), SPEND_TTL_SECONDS])

    def spent(self, who: str, day: str) -> float:
        values = self.client.hmget(self._spend_key(who, day), ["spent", "reserved"])
        return sum(float(v) for v in values if v is not None)

    def _spend_key(self, who: str, day: str) -> str:
        return f"{self.namespace}:spend:{day}:{who}"


# A replica's share of request rates -------------------------------------------------------------------
LEASE_SECONDS = 0.1  # how long a replica may hold requests booked ahead before it gives them back
MAX_LEASE = 32  # the most requests booked in one round trip
AHEAD = 4  # book the next share once a quarter of the last one is left


@dataclass
class _Lease:
    left: int = 0  # booked, not yet used
    expires: float = 0.0
    asked_at: float | None = None  # when this replica last asked the shared store
    since_asked: int = 0  # requests of the caller here since then
    booked: int = 0  # what the last round trip booked


class LeasedRates:
    """`admit` of a shared quota store (the cluster's actor, Redis) without a round trip per request:
    when a caller's requests come fast, a replica books several at once (`Quotas.lease`, as many as
    it saw in the last LEASE_SECONDS, at most MAX_LEASE) and lets them through locally; what it has
    not used after LEASE_SECONDS goes back with its next round trip for that caller. Every request
    let through was booked on the caller's one shared clock, so all replicas together never pass
    more than the rate and burst allow, give or take the requests booked in one lease period. A
    caller asking slowly books one request per round trip, exactly as `admit` does.

    Once a quarter of a share is left (`running_low`), the next can be booked before it runs out
    (`book_ahead`, off the request's path): a fast caller's requests then never wait on a round trip.
    The few left of the old share go with the new one, so a request may go up to twice LEASE_SECONDS
    after it was booked. Safe to share between threads."""

    def __init__(self, store: Quotas, clock: Callable[[], float] = time.monotonic,
                 lease_seconds: float = LEASE_SECONDS, max_lease: int = MAX_LEASE) -> None:
        self.store, self.clock = store, clock
        self.lease_seconds, self.max_lease = lease_seconds, max_lease
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def take_local(self, who: str) -> bool:
        """Let one request of `who` through on what this replica booked already (no round trip)."""
        now = self.clock()
        with self._lock:
            lease = self._leases.get(who)
            if lease is None or lease.left <= 0 or lease.expires <= now:
                return False
            lease.left -= 1
            lease.since_asked += 1
            return True

    def running_low(self, who: str) -> bool:
        """Whether `who`'s share here, booked for a caller fast enough to share it out (AHEAD or more
        a lease), is down to its last quarter of requests or of time: time to book ahead."""
        now = self.clock()
        with self._lock:
            lease = self._leases.get(who)
            if lease is None or lease.booked < AHEAD or lease.expires <= now:
                return False
            return lease.left <= lease.booked // AHEAD or lease.expires - now <= self.lease_seconds / AHEAD

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        """0 when the request may go; else the seconds to wait (as Quotas.admit). Errors of the store
        propagate; the permits being given back are then kept for the next try."""
        if self.take_local(who):
            return 0.0
        return self._book(who, per_minute, burst, for_a_request=True)

    def book_ahead(self, who: str, per_minute: int, burst: int) -> float:
        """Book `who`'s next share now, added to what is left here: 0, or the seconds to wait when
        the rate allows none now (nothing booked). Errors propagate, as admit's."""
        return self._book(who, per_minute, burst, for_a_request=False)

    def _book(self, who: str, per_minute: int, burst: int, for_a_request: bool) -> float:
        now = self.clock()
        with self._lock:
            lease = self._leases.setdefault(who, _Lease())
            lease.since_asked += for_a_request
            expired = lease.left if lease.expires <= now else 0
            lease.left -= expired
            want = 1
            if lease.asked_at is not None and now > lease.asked_at:
                # What the caller's rate here uses in a lease, less what is left of the last one.
                rate = lease.since_asked / (now - lease.asked_at)
                want = min(self.max_lease, max(burst, 1), math.ceil(rate * self.lease_seconds))
                want = max(1, want - lease.left)
            if len(self._leases) > 10_000:  # forget callers whose leases ran out
                self._leases = {k: v for k, v in self._leases.items() if v.expires > now or k == who}
        try:
            booked, wait = self.store.lease(who, per_minute, burst, want, expired)
        except Exception:
            with self._lock:
                lease.left += expired
            raise
        with self._lock:
            lease.asked_at, lease.since_asked = now, 0
            if booked <= 0:
                return wait
            lease.left += booked - for_a_request  # a request takes the first it booked
            lease.booked = booked
            lease.expires = self.clock() + self.lease_seconds
        return 0.0
