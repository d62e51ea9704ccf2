"""The rate limiter of one provider account: pacing, token budget, in-flight cap, circuit.

Pure asyncio logic, run inside one `ProviderLimiter` actor per account so that every Ray Data
worker and every Serve replica draws from the same limits (actors/provider_limiter.py), or
in-process when there is no cluster. Real providers enforce per-minute limits in short windows,
so requests are spaced evenly at a pace a little under the limit instead of sent in bursts.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PACE = 0.98  # default fraction of the declared limit to aim at: 1.0 draws 429s from jitter at window edges
SLOWEST = 0.25  # after many 429s, never pace below this fraction of the limit
LEASE_SECONDS = 600.0  # a permit whose holder vanished is reclaimed after this long (default)


@dataclass(frozen=True)
class Limits:
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_in_flight: int = 32
    failure_threshold: int = 5  # consecutive failures that open the circuit
    cooldown_seconds: float = 30.0  # how long it stays open before a probe
    pace: float = PACE  # fraction of the limits to aim at; lower it when grants reach callers late


@dataclass
class Grant:
    granted: bool
    permit: int = 0
    reason: str = ""
    waited: float = 0.0


@dataclass
class Outcome:
    """What one call told us about the provider."""

    status: int | None = None  # HTTP status; None when no reply came (timeout, connection)
    retry_after: float | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    tokens: int | None = None  # tokens the call really used, to correct the estimate
    sent: bool = True  # False: no reply to learn from (the request could not be sent, or its caller gave up)


@dataclass
class _Lease:
    tokens: int
    expires: float
    probe: bool = False
    granted_at: float = 0.0  # about when the request left: rate headers count from there


@dataclass
class RateLimiter:
    limits: Limits
    clock: Callable[[], float] = time.monotonic
    _next_slot: float = 0.0
    _token_level: float = 0.0
    _token_time: float = 0.0
    _paused_until: float = 0.0
    _factor: float = 1.0  # current pace as a fraction of PACE, lowered by 429s
    _failures: int = 0
    _open_until: float | None = None
    _probe_out: bool = False
    _leases: dict[int, _Lease] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _slot_free: asyncio.Event | None = None
    stats: dict[str, float] = field(default_factory=lambda: {
        "granted": 0, "denied": 0, "rate_limited": 0, "failures": 0, "circuit_opened": 0, "reclaimed": 0,
    })

    def configure(self, limits: Limits) -> None:
        self.limits = limits

    # taking permits ----------------------------------------------------------------------
    async def acquire(self, tokens: int = 0, max_wait: float | None = None, hold: float | None = None) -> Grant:
        """Wait for a permit to send one request of about `tokens` tokens. Denied at once while
        the circuit is open; denied when the wait would exceed `max_wait` seconds."""
        started = self.clock()
        self._reclaim()  # first: a probe whose holder vanished must not keep the circuit shut
        probe = False
        if self._open_until is not None:
            now = self.clock()
            if now < self._open_until or self._probe_out:
                self.stats["denied"] += 1
                return Grant(False, reason=self._open_reason(now))
            probe = self._probe_out = True  # half-open: this one call tests the provider
        permit = 0
        try:
            while True:
                self._reclaim()
                if len(self._leases) < self.limits.max_in_flight:
                    break
                wait = None if max_wait is None else max_wait - (self.clock() - started)
                if wait is not None and wait <= 0:
                    return self._deny(f"no request slot free within {max_wait:g}s", probe)
                self._slot_free = self._slot_free or asyncio.Event()
                try:
                    await asyncio.wait_for(self._slot_free.wait(), timeout=min(wait or 1.0, 1.0))
                except asyncio.TimeoutError:
                    pass
            # Hold the in-flight place while waiting for the pace, so the count is never exceeded.
            permit = next(self._ids)
            self._leases[permit] = _Lease(tokens, self.clock() + LEASE_SECONDS, probe)
            while True:
                now = self.clock()
                booked = (self._next_slot, self._token_level, self._token_time)
                at = self._reserve(now, tokens)
                if max_wait is not None and at - started > max_wait:
                    # A request that is not sent uses no quota: give its slot and tokens back.
                    self._next_slot, self._token_level, self._token_time = booked
                    self._drop(permit)
                    return self._deny(f"the rate limit allows no request within {max_wait:g}s", probe)
                if at > now:
                    await asyncio.sleep(at - now)
                if self.clock() >= self._paused_until:  # a 429 may have paused us while we slept
                    break
        except asyncio.CancelledError:  # the caller gave up while waiting: free its place
            if permit:
                self._drop(permit)
            if probe:
                self._probe_out = False
            raise
        self.stats["granted"] += 1
        lease = self._leases[permit]
        lease.granted_at = self.clock()
        if hold is not None:  # the caller's longest attempt: a killed caller's place comes back soon
            lease.expires = lease.granted_at + hold
        return Grant(True, permit=permit, waited=self.clock() - started)

    def renew(self, permit: int, hold: float) -> bool:
        """A caller still at work keeps its place for `hold` more seconds; False if it was lost."""
        self._reclaim()  # a lease that already ran out is not brought back
        lease = self._leases.get(permit)
        if lease is None:
            return False
        lease.expires = self.clock() + hold
        return True

    def _reserve(self, now: float, tokens: int) -> float:
        """The time this request may go, booked so the next one is spaced after it."""
        at = max(now, self._paused_until)
        rpm = self.limits.requests_per_minute
        if rpm:
            at = max(at, self._next_slot)
            self._next_slot = at + 60.0 / (rpm * self.limits.pace * self._factor)
        tpm = self.limits.tokens_per_minute
        if tpm and tokens:
            rate = tpm * self.limits.pace * self._factor / 60.0  # tokens per second
            capacity = max(rate, float(tokens))  # one second of tokens, or one large request
            level = min(capacity, self._token_level + (at - self._token_time) * rate)
            if level < tokens:
                at += (tokens - level) / rate
                level = float(tokens)
            self._token_level, self._token_time = level - tokens, at
        return at

    def _deny(self, reason: str, probe: bool) -> Grant:
        if probe:
            self._probe_out = False
        self.stats["denied"] += 1
        return Grant(False, reason=reason)

    # giving them back --------------------------------------------------------------------
    def release(self, permit: int, outcome: Outcome) -> None:
        """Return a permit with what the call taught us: 429s and rate headers slow everyone
        down; repeated failures open the circuit; a success closes it."""
        lease = self._drop(permit)
        if not outcome.sent:  # the provider told us nothing: only give the place back
            if lease is not None and lease.probe:
                self._probe_out = False
            return
        now = self.clock()
        status = outcome.status
        if lease is not None and outcome.tokens is not None and self.limits.tokens_per_minute:
            self._token_level -= outcome.tokens - lease.tokens  # correct the estimate
        if outcome.remaining_requests == 0 and outcome.reset_requests:
            # The provider's window resets `reset_requests` after it admitted the request, not
            # after its reply reached us: counting from the reply would idle into the next window.
            sent = lease.granted_at if lease is not None and lease.granted_at else now
            self._paused_until = max(self._paused_until, sent + outcome.reset_requests)
        if status == 429:
            self.stats["rate_limited"] += 1
            self._paused_until = max(self._paused_until, now + (outcome.retry_after or 1.0))
            self._factor = max(SLOWEST, self._factor * 0.8)
            self._next_slot = max(self._next_slot, self._paused_until)
            if lease is not None and lease.probe:
                self._probe_out = False
            return
        if status is None or status >= 500 or status == 408:
            self.stats["failures"] += 1
            self._failures += 1
            if (lease is not None and lease.probe) or self._failures >= self.limits.failure_threshold:
                if self._open_until is None or now >= self._open_until:
                    self.stats["circuit_opened"] += 1
                self._open_until = now + self.limits.cooldown_seconds
            if lease is not None and lease.probe:
                self._probe_out = False
            return
        # The provider answered (success, or a client error that is the request's fault).
        self._failures = 0
        self._open_until = None
        self._probe_out = False
        if status < 400:
            self._factor = min(1.0, self._factor + 0.01)

    def _drop(self, permit: int) -> _Lease | None:
        lease = self._leases.pop(permit, None)
        if lease is not None and self._slot_free is not None:
            self._slot_free.set()
            self._slot_free = None
        return lease

    def _reclaim(self) -> None:
        now = self.clock()
        for permit in [p for p, lease in self._leases.items() if lease.expires < now]:
            lease = self._drop(permit)
            if lease is not None and lease.probe:
                self._probe_out = False
            self.stats["reclaimed"] += 1

    def _open_reason(self, now: float) -> str:
        wait = max(0.0, (self._open_until or now) - now)
        return (
            f"circuit open after {self._failures} consecutive provider failures;"
            f" the next probe is allowed in {wait:.0f}s"
        )

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "in_flight": len(self._leases),
            "pace_factor": round(self._factor, 3),
            "paused_for": round(max(0.0, self._paused_until - now), 3),
            "circuit": "closed" if self._open_until is None else ("open" if now < self._open_until else "half-open"),
            "consecutive_failures": self._failures,
            **self.stats,
        }
