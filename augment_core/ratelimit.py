"""The rate limiter of one provider account: pacing, token budget, in-flight cap, circuit.

Pure asyncio logic, run inside one `ProviderLimiter` actor per account so that every Ray Data
worker and every Serve replica draws from the same limits (actors/provider_limiter.py), or
in-process when there is no cluster. Real providers enforce per-minute limits in short windows,
so requests and tokens are spaced evenly at a pace a little under the limits instead of sent in
bursts. Callers wait in one queue, in order; only its head watches the limits, so what a reply
teaches (the tokens it really used, a 429) applies to the very next grant.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PACE = 0.98  # default fraction of the declared limit to aim at: 1.0 draws 429s from jitter at window edges
SLOWEST = 0.25  # after many 429s, never pace below this fraction of the limit
LEASE_SECONDS = 600.0  # a permit whose holder vanished is reclaimed after this long (default)
LATE = 0.005  # a grant this much behind its slot keeps the pace instead of pushing the next one back
TOKEN_RATIO_WEIGHT = 0.2  # how much each reply moves the learned used/estimated token ratio
MIN_TOKEN_RATIO, MAX_TOKEN_RATIO = 0.01, 4.0
# An urgent call (someone waits for it) goes ahead of calls that came up to this long before it.
# Older ones still go first: batch runs next to a busy API are slowed, never stopped (a strict
# priority starved two runs completely behind three API clients).
URGENT_LEAD_SECONDS = 10.0
RECENT_SECONDS = 300.0  # the window of `RateLimiter.recent` (a health view's "last 5 minutes")


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
    rank: float = 0.0  # the place in the queue: pass it back when retrying to keep it


@dataclass
class Outcome:
    """What one call told us about the provider."""

    status: int | None = None  # HTTP status; None when no reply came (timeout, connection)
    retry_after: float | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    tokens: int | None = None  # tokens the call really used, to correct the estimate
    sent: bool = True  # False: no reply to learn from (the request could not be sent, or its caller gave up)
    seconds: float | None = None  # the attempt's time from sending to its reply or failure (metrics)


@dataclass
class _Lease:
    tokens: int  # reserved: the caller's estimate scaled by what replies taught us
    expires: float
    probe: bool = False
    granted_at: float = 0.0  # about when the request left: rate headers count from there
    estimate: int = 0  # the caller's own estimate, to learn how far off such estimates are


@dataclass(order=True)
class _Waiter:
    rank: float  # when its first attempt came (urgent: earlier): a retry goes ahead of callers that came later
    seq: int
    turn: asyncio.Event = field(compare=False, default_factory=asyncio.Event)  # set when it heads the queue


@dataclass
class RateLimiter:
    limits: Limits
    clock: Callable[[], float] = time.monotonic
    _next_slot: float = 0.0  # the earliest time the next request may go
    _token_clock: float = 0.0  # the time by which the tokens granted so far are paid for
    _token_ratio: float | None = None  # tokens used / tokens estimated, learned from replies
    _paused_until: float = 0.0
    _factor: float = 1.0  # current pace as a fraction of PACE, lowered by 429s
    _failures: int = 0
    _open_until: float | None = None
    _probe_out: bool = False
    _leases: dict[int, _Lease] = field(default_factory=dict)
    _queue: list[_Waiter] = field(default_factory=list)  # a heap: the head is the next to go
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _wake: asyncio.Event | None = None  # poked when the head may go earlier or must go later
    stats: dict[str, float] = field(default_factory=lambda: {
        "granted": 0, "denied": 0, "rate_limited": 0, "failures": 0, "circuit_opened": 0, "reclaimed": 0,
    })
    # (when, "answered" | "rate_limited" | "failures") of the replies of the last RECENT_SECONDS
    _recent: collections.deque[tuple[float, str]] = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def configure(self, limits: Limits) -> None:
        self.limits = limits
        self._poke()

    # taking permits ----------------------------------------------------------------------
    async def acquire(self, tokens: int = 0, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Grant:
        """Wait for a permit to send one request of about `tokens` tokens. Callers are served in
        order of `rank`, the time they came (a retry passes its grant's rank back to keep its
        place); `urgent` callers (a person waits for the answer) count as having come
        URGENT_LEAD_SECONDS earlier.
        Denied at once while the circuit is open; denied when the wait would exceed `max_wait`."""
        started = self.clock()
        self._reclaim()  # first: a probe whose holder vanished must not keep the circuit shut
        probe = False
        if self._open_until is not None:
            now = self.clock()
            if now < self._open_until or self._probe_out:
                self.stats["denied"] += 1
                return Grant(False, reason=self._open_reason(now))
            probe = self._probe_out = True  # half-open: this one call tests the provider
        seq = next(self._ids)
        if rank is None:
            rank = started - URGENT_LEAD_SECONDS if urgent else started
        waiter = _Waiter(rank, seq)
        heapq.heappush(self._queue, waiter)
        if self._queue[0] is waiter:
            self._poke()  # the old head must wait behind this one
        deadline = None if max_wait is None else started + max_wait
        try:
            denied = await self._wait_for_turn(waiter, tokens, deadline)
        except asyncio.CancelledError:  # the caller gave up while waiting: free its place
            if probe:
                self._probe_out = False
            raise
        finally:
            self._leave(waiter)
        if denied:
            return self._deny(f"{denied} within {max_wait:g}s", probe)
        now = self.clock()
        reserved = self._reserved(tokens)
        self._book(now, reserved)
        self.stats["granted"] += 1
        expires = now + (hold if hold is not None else LEASE_SECONDS)  # a killed caller's place comes back
        self._leases[seq] = _Lease(reserved, expires, probe, granted_at=now, estimate=tokens)
        return Grant(True, permit=seq, waited=now - started, rank=waiter.rank)

    async def _wait_for_turn(self, waiter: _Waiter, tokens: int, deadline: float | None) -> str | None:
        """Wait until `waiter` heads the queue, a request slot is free and the pace lets it go;
        None then, else why it cannot go before `deadline`. Only the head watches the limits, so
        what replies teach (used tokens, a 429) applies to the very next request."""
        while True:
            self._reclaim()
            now = self.clock()
            left = None if deadline is None else deadline - now
            if self._queue[0] is not waiter:
                if left is not None and left <= 0:
                    return "the rate limit allows no request"
                waiter.turn.clear()
                await _wait(waiter.turn, left)
                continue
            if len(self._leases) >= self.limits.max_in_flight:
                if left is not None and left <= 0:
                    return "no request slot free"
                await self._nap(min(left, 1.0) if left is not None else 1.0)  # 1 s: leases may run out
                continue
            at = self._earliest(now, self._reserved(tokens))
            if deadline is not None and at > deadline:
                return "the rate limit allows no request"
            if at <= now:
                return None
            await self._nap(at - now)

    def _leave(self, waiter: _Waiter) -> None:
        """Take `waiter` out of the queue (granted, denied or cancelled) and hand the turn on."""
        if self._queue and self._queue[0] is waiter:
            heapq.heappop(self._queue)
        elif waiter in self._queue:
            self._queue.remove(waiter)
            heapq.heapify(self._queue)
        if self._queue:
            self._queue[0].turn.set()

    def renew(self, permit: int, hold: float) -> bool:
        """A caller still at work keeps its place for `hold` more seconds; False if it was lost."""
        self._reclaim()  # a lease that already ran out is not brought back
        lease = self._leases.get(permit)
        if lease is None:
            return False
        lease.expires = self.clock() + hold
        return True

    def _reserved(self, tokens: int) -> int:
        """The tokens to book for a request estimated at `tokens`: estimates are scaled by how
        far off replies showed them to be (an estimate counting max_tokens is mostly unused)."""
        if not tokens or self._token_ratio is None:
            return tokens
        return max(1, math.ceil(tokens * self._token_ratio))

    def _earliest(self, now: float, tokens: int) -> float:
        """When a request of `tokens` may go: after any pause, its request slot and the tokens
        already granted are paid for at the paced rate."""
        at = max(now, self._paused_until)
        if self.limits.requests_per_minute:
            at = max(at, self._next_slot)
        if self.limits.tokens_per_minute and tokens:
            at = max(at, self._token_clock)
        return at

    def _book(self, now: float, tokens: int) -> None:
        """Space the next request after this one: by one request interval, and by the time this
        request's tokens take at the paced token rate. A wake-up a moment late is not lost, but
        an idle spell gives no credit: a burst after it would overrun the provider's window."""
        rpm = self.limits.requests_per_minute
        if rpm:
            self._next_slot = _on_schedule(self._next_slot, now) + 60.0 / (rpm * self.limits.pace * self._factor)
        rate = self._token_rate()
        if rate and tokens:
            self._token_clock = _on_schedule(self._token_clock, now) + tokens / rate

    def _token_rate(self) -> float | None:
        tpm = self.limits.tokens_per_minute
        return tpm * self.limits.pace * self._factor / 60.0 if tpm else None

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def _nap(self, seconds: float) -> None:
        """Sleep until `seconds` pass or the limits change (a release, a 429, a new head)."""
        self._wake = self._wake or asyncio.Event()
        await _wait(self._wake, seconds)

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
        self._recent.append((now, "rate_limited" if status == 429 else
                             "failures" if status is None or status >= 500 or status == 408 else "answered"))
        if lease is not None and outcome.tokens is not None:
            self._learn_tokens(lease, outcome.tokens)
        sent = lease.granted_at if lease is not None and lease.granted_at else now
        for remaining, reset in ((outcome.remaining_requests, outcome.reset_requests),
                                 (outcome.remaining_tokens, outcome.reset_tokens)):
            if remaining == 0 and reset:
                # The provider's window resets `reset` after it admitted the request, not after
                # its reply reached us: counting from the reply would idle into the next window.
                self._paused_until = max(self._paused_until, sent + reset)
                self._poke()
        if status == 429:
            self.stats["rate_limited"] += 1
            self._paused_until = max(self._paused_until, now + (outcome.retry_after or 1.0))
            self._factor = max(SLOWEST, self._factor * 0.8)
            self._next_slot = max(self._next_slot, self._paused_until)
            self._poke()
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

    def _learn_tokens(self, lease: _Lease, used: int) -> None:
        """Pay for the tokens a reply really used instead of those reserved (the head may go
        sooner, or later), and learn how far off the callers' estimates are."""
        rate = self._token_rate()
        if rate:
            self._token_clock += (used - lease.tokens) / rate
            self._poke()
        if lease.estimate > 0:
            seen = min(MAX_TOKEN_RATIO, max(MIN_TOKEN_RATIO, used / lease.estimate))
            old = self._token_ratio
            self._token_ratio = seen if old is None else (1 - TOKEN_RATIO_WEIGHT) * old + TOKEN_RATIO_WEIGHT * seen

    def _drop(self, permit: int) -> _Lease | None:
        lease = self._leases.pop(permit, None)
        if lease is not None:
            self._poke()  # a request slot is free
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

    def recent(self) -> dict[str, int]:
        """Replies of the last RECENT_SECONDS by kind: what a health view shows."""
        now = self.clock()
        while self._recent and self._recent[0][0] < now - RECENT_SECONDS:
            self._recent.popleft()
        counts = {"answered": 0, "rate_limited": 0, "failures": 0}
        for _, kind in self._recent:
            counts[kind] += 1
        return counts

    def circuit(self, now: float | None = None) -> str:
        """closed, open (calls refused) or half-open (a probe may go)."""
        if self._open_until is None:
            return "closed"
        return "open" if (self.clock() if now is None else now) < self._open_until else "half-open"

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "recent": self.recent(),
            "in_flight": len(self._leases),
            "queued": len(self._queue),
            "token_ratio": None if self._token_ratio is None else round(self._token_ratio, 3),
            "pace_factor": round(self._factor, 3),
            "paused_for": round(max(0.0, self._paused_until - now), 3),
            "circuit": self.circuit(now),
            "consecutive_failures": self._failures,
            **self.stats,
        }


def _on_schedule(slot: float, now: float) -> float:
    """Where the next interval starts: at the slot a grant kept (or missed by a moment), else now."""
    return slot if slot >= now - LATE else now


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Wait for `event`, at most `seconds` (None: without a bound)."""
    try:
        await asyncio.wait_for(event.wait(), timeout=None if seconds is None else max(0.0, seconds))
    except asyncio.TimeoutError:
        pass
