"""One provider call: permits, deadline, retries with backoff and jitter, the provider's verdict.

Retried: timeouts, connection errors, 408, 409, 429 and 5xx, while the per-call deadline
allows, each retry keeping the first attempt's place in the limiter's queue; other 4xx fail
at once with the provider's own message. Every attempt takes a permit
from the account's limiter and returns it with what the reply said (status, Retry-After,
x-ratelimit-*), so one slow-down reaches every worker.

Every connection goes through the address guard (`safe_transport`): a host that is or resolves to
a loopback, private, link-local... address is refused at once, unless the provider's allow_hosts
names it. Non-idempotent requests carry the caller's Idempotency-Key on every attempt, so that a
provider that did the work of an attempt whose reply was lost does not do it (and bill it) again.
What each attempt may have cost travels back in `Reply.tried`; a retry first asks the caller's
`reserve_retry` (the run's budget) for room, so that the budget covers every attempt sent.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from augment_core.ratelimit import Outcome
from pipelines.inference.permits import Permits
from pipelines.inference.safe_transport import RefusedAddress, guarded_client

RETRYABLE = frozenset({408, 409, 429}) | frozenset(range(500, 600))
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
LEASE_HOLD_SECONDS = 15.0  # how long a permit outlives its last renewal
LEASE_RENEW_SECONDS = 5.0
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Errors after the whole request went out: the provider may have done (and billed) the work.
_UNANSWERED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)  # secrets: never logged or stored

    def public(self) -> dict[str, Any]:
        """The request as previews show it. Header values are masked: they only ever come from
        environment variables (keys, tokens)."""
        headers = {k: "***" for k in self.headers}
        out: dict[str, Any] = {"method": self.method, "url": self.url}
        if self.params:
            out["params"] = self.params
        if headers:
            out["headers"] = headers
        if self.json is not None:
            out["json"] = self.json
        return out


@dataclass(frozen=True)
class Attempt:
    """One attempt sent, as far as what it cost goes: the status and JSON body of its reply (the
    body's usage is what was billed), or no reply although the request went out in full (a read
    timeout, a dropped connection), when the provider may have billed it all the same."""

    status: int | None = None
    body: Any = None
    unanswered: bool = False


@dataclass
class Reply:
    ok: bool
    status: int | None = None
    body: Any = None
    error: str | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    tried: list[Attempt] = field(default_factory=list)  # every attempt sent, the last one included
    budget_refused: bool = False  # a retry found no room in the budget: the call stopped there


_CLIENTS: dict[tuple[int, frozenset[str]], httpx.AsyncClient] = {}


def http_client(allow_hosts: Collection[str] = ()) -> httpx.AsyncClient:
    """One pooled, guarded client per event loop and allow-list (the background loop holds them for
    the process): a connection one provider may open is never lent to one that may not."""
    key = (id(asyncio.get_running_loop()), frozenset(allow_hosts))
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = guarded_client(allow_hosts)
    return client


async def call(
    request: Request,
    permits: Permits,
    *,
    tokens: int = 0,
    deadline_s: float = 60.0,
    attempt_timeout_s: float | None = None,
    max_retries: int = 4,
    queue_wait_s: float = 1800.0,
    stopped: Callable[[], Awaitable[str | None]] | None = None,
    urgent: bool = False,
    allow_hosts: Collection[str] = (),
    idempotency_key: str | None = None,
    reserve_retry: Callable[[], Awaitable[bool]] | None = None,
) -> Reply:
    """Send a request until it succeeds, fails for good, or the deadline passes. The deadline
    counts the call's own time — attempts, backoff — not the time it waits in the limiter's queue
    for its turn: that wait has a budget of its own, `queue_wait_s`, generous because under a low
    limit the last records of a batch wait behind all the others. `stopped` is asked once a
    permit is granted: a run cancelled while the call waited for its turn sends nothing.
    `urgent` calls (someone waits for the answer) go ahead of the others in the limiter's queue.
    `allow_hosts`: the provider's hosts that may be private. `idempotency_key` is sent on every
    attempt of a POST. `reserve_retry` is asked before each retry: False ends the call
    (`budget_refused`) without sending it."""
    started = time.monotonic()
    queued = 0.0  # time spent waiting for permits, which the deadline does not count
    rank: float | None = None  # the first attempt's place in the queue, kept by every retry
    attempts = 0
    last_error = "no attempt was made"
    tried: list[Attempt] = []
    headers = dict(request.headers)
    if idempotency_key is not None and request.method.upper() == "POST":
        headers[IDEMPOTENCY_HEADER] = idempotency_key

    def failed(error: str, status: int | None = None) -> Reply:
        return _failed(error, attempts, started, status, tried)

    def used() -> float:
        return time.monotonic() - started - queued

    while True:
        if used() >= deadline_s:
            return failed(f"deadline of {deadline_s:g}s passed after {attempts} attempt(s); last: {last_error}")
        if attempts and reserve_retry is not None and not await reserve_retry():
            reply = failed(f"the budget leaves no room for attempt {attempts + 1}; last: {last_error}")
            reply.budget_refused = True
            return reply
        # The place is held while the attempt renews it: a caller killed mid-call (a lost worker or
        # driver) gives it back within LEASE_HOLD_SECONDS instead of after its whole deadline.
        asked = time.monotonic()
        grant = await permits.acquire(
            tokens, max_wait=max(0.0, queue_wait_s - queued), hold=LEASE_HOLD_SECONDS, rank=rank, urgent=urgent)
        queued += time.monotonic() - asked
        rank = grant.rank
        if not grant.granted:  # the circuit is open, or the queue's wait ran out
            return failed(grant.reason)
        reason = await stopped() if stopped is not None else None
        if reason is not None:
            await permits.release(grant.permit, Outcome(sent=False))
            return failed(reason)
        attempts += 1
        outcome = Outcome()
        retry_after: float | None = None
        try:
            timeout = max(0.05, deadline_s - used())
            if attempt_timeout_s is not None:
                timeout = min(timeout, attempt_timeout_s)
            sent_at = time.monotonic()
            renewing = asyncio.create_task(_keep_lease(permits, grant.permit))
            try:
                response = await http_client(allow_hosts).request(
                    request.method, request.url, json=request.json, params=request.params,
                    headers=headers, timeout=timeout,
                )
            finally:
                renewing.cancel()
        except RefusedAddress as exc:  # nothing was sent, and another try would be refused alike
            await permits.release(grant.permit, Outcome(sent=False))
            return failed(str(exc))
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            last_error = "timed out" if timed_out else f"{type(exc).__name__}: {exc}"[:300]
            outcome.seconds = time.monotonic() - sent_at
            tried.append(Attempt(unanswered=isinstance(exc, _UNANSWERED)))
        except BaseException:  # a body that cannot be encoded, a cancelled caller: the permit goes back
            await permits.release(grant.permit, Outcome(sent=False))
            raise
        else:
            outcome = _outcome(response)
            outcome.seconds = time.monotonic() - sent_at
            retry_after = outcome.retry_after
            body = _json(response)
            tried.append(Attempt(response.status_code, None if body is _NOT_JSON else body))
            if response.status_code < 400:
                outcome.tokens = _total_tokens(body)
                await permits.release(grant.permit, outcome)
                if body is _NOT_JSON:
                    return failed(
                        f"provider replied {response.status_code} with a body that is not JSON", response.status_code
                    )
                return Reply(True, response.status_code, body, attempts=attempts, latency_ms=_ms(started), tried=tried)
            last_error = f"HTTP {response.status_code}: {provider_message(response)}"
            if response.status_code not in RETRYABLE:
                await permits.release(grant.permit, outcome)
                return failed(last_error, response.status_code)
        await permits.release(grant.permit, outcome)
        if attempts > max_retries:
            return failed(f"gave up after {attempts} attempts; last: {last_error}", outcome.status)
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        wait = max(backoff, retry_after or 0.0)
        if wait >= deadline_s - used():
            return failed(
                f"deadline of {deadline_s:g}s leaves no time to retry after {attempts} attempt(s); last: {last_error}",
                outcome.status,
            )
        await asyncio.sleep(wait)


_NOT_JSON = object()


async def _keep_lease(permits: Permits, permit: int) -> None:
    """Renew an in-flight call's permit until the call ends (the caller cancels this task)."""
    while True:
        await asyncio.sleep(LEASE_RENEW_SECONDS)
        try:
            await permits.renew(permit, LEASE_HOLD_SECONDS)
        except Exception:  # the limiter is restarting: the next tick tries again
            continue


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _total_tokens(body: Any) -> int | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        return usage["total_tokens"]
    return None


def _failed(error: str, attempts: int, started: float, status: int | None, tried: list[Attempt]) -> Reply:
    return Reply(False, status, error=error, attempts=attempts, latency_ms=_ms(started), tried=tried)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def provider_message(response: httpx.Response) -> str:
    """The provider's own words: error.message of an OpenAI-style body, else the text."""
    body = _json(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return (response.text or response.reason_phrase or "no message")[:500]


def _outcome(response: httpx.Response) -> Outcome:
    headers = response.headers
    return Outcome(
        status=response.status_code,
        retry_after=retry_after(headers),
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


def retry_after(headers: httpx.Headers) -> float | None:
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset durations: '1s', '6m0s', '250ms', '0.35s'."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000
