"""One provider call against the project's fake OpenAI server: retries, Retry-After, deadlines,
errors in the provider's own words, and what a preview may show of a request."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

import pipelines.inference.client as client
from augment_core.ratelimit import Limits
from devtools.fake_openai import FakeOpenAI
from pipelines.inference.client import Reply, Request, call, parse_duration, retry_after
from pipelines.inference.permits import LocalPermits

RETRY_AFTER_S = 0.3
_accounts = itertools.count()


FAKE_PROVIDER = {"retry_after_s": RETRY_AFTER_S, "timeout_sleep_s": 1.5}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAI) -> None:
    fake.configure(rpm=None, tpm=None, latency_ms=(0, 0))
    fake.reset()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff of a few milliseconds, so only the provider's Retry-After takes time."""
    monkeypatch.setattr(client, "BACKOFF_BASE", 0.01)


def permits(**limits: Any) -> LocalPermits:
    """A limiter of its own (LocalPermits are shared per account within the process)."""
    return LocalPermits(f"client-test-{next(_accounts)}", Limits(**limits))


def chat(fake: FakeOpenAI, text: str, headers: dict[str, str] | None = None) -> Request:
    return Request("POST", f"{fake.base_url}/chat/completions", json={
        "model": "fake-small", "messages": [{"role": "user", "content": text}],
    }, headers=headers or {})


LOOPBACK = ("127.0.0.1",)  # the fake provider's host, allowed as a provider's allow_hosts would


def send(request: Request, p: LocalPermits | None = None, **kwargs: Any) -> tuple[Reply, float]:
    kwargs.setdefault("allow_hosts", LOOPBACK)
    started = time.monotonic()
    reply = asyncio.run(call(request, p or permits(), **kwargs))
    return reply, time.monotonic() - started


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# success ---------------------------------------------------------------------------------------
def test_a_good_call_succeeds_at_the_first_attempt(fake: FakeOpenAI) -> None:
    reply, _ = send(chat(fake, "hello there"))
    assert reply.ok and reply.status == 200 and reply.attempts == 1 and reply.error is None
    assert reply.body["choices"][0]["message"]["content"] == "echo: hello there"
    assert reply.latency_ms > 0
    assert fake.stats()["requests"] == 1


def test_the_reply_tokens_go_back_to_the_limiter(fake: FakeOpenAI) -> None:
    p = permits(tokens_per_minute=60_000)
    reply, _ = send(chat(fake, "count my tokens"), p, tokens=5_000)
    assert reply.ok
    # 5,000 tokens were reserved (5 s of tokens); the reply used a handful, and paid for only those.
    assert p.limiter._token_clock - time.monotonic() < 0.5
    assert p.limiter.snapshot()["token_ratio"] <= 0.01  # and later estimates are scaled down


class RecordingPermits(LocalPermits):
    def __init__(self) -> None:
        super().__init__(f"client-test-{next(_accounts)}", Limits())
        self.ranks: list[float | None] = []

    async def acquire(self, tokens: int, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Any:
        self.ranks.append(rank)
        return await super().acquire(tokens, max_wait, hold, rank, urgent)


def test_every_retry_keeps_the_first_attempts_place_in_the_queue(fake: FakeOpenAI, fast_backoff: None) -> None:
    p = RecordingPermits()
    reply, _ = send(chat(fake, "flaky #500x2"), p, deadline_s=10)
    assert reply.ok and reply.attempts == 3
    first = p.ranks[1]
    assert p.ranks == [None, first, first] and first is not None


# retries ---------------------------------------------------------------------------------------
def test_429s_are_retried_after_the_providers_retry_after(fake: FakeOpenAI, fast_backoff: None) -> None:
    p = permits()
    reply, took = send(chat(fake, "busy #429x2"), p, deadline_s=10)
    assert reply.ok, reply.error
    assert reply.attempts == 3
    assert took >= 2 * RETRY_AFTER_S - 0.02  # waited out each Retry-After (retry-after-ms: 300)
    assert fake.stats()["by_status"] == {"429": 2, "200": 1}
    assert p.limiter.snapshot()["rate_limited"] == 2  # the whole account slowed down


@pytest.mark.parametrize(("marker", "failures"), [("#500x1", 1), ("#500x3", 3), ("#503x2", 2)])
def test_server_errors_are_retried_until_success(fake: FakeOpenAI, fast_backoff: None, marker: str,
                                                 failures: int) -> None:
    reply, _ = send(chat(fake, f"flaky {marker}"), deadline_s=10)
    assert reply.ok, reply.error
    assert reply.attempts == failures + 1
    assert fake.stats()["requests"] == failures + 1


def test_a_400_fails_at_once_with_the_providers_message(fake: FakeOpenAI) -> None:
    p = permits(failure_threshold=1)
    reply, took = send(chat(fake, "malformed #400"), p)
    assert not reply.ok
    assert reply.status == 400 and reply.attempts == 1
    assert reply.error == "HTTP 400: bad request: marker #400"
    assert fake.stats()["requests"] == 1
    assert took < 2.0
    assert p.limiter.snapshot()["circuit"] == "closed"  # the request's fault, not the provider's


def test_an_invalid_request_body_fails_with_the_providers_reason(fake: FakeOpenAI) -> None:
    request = Request("POST", f"{fake.base_url}/chat/completions", json={"model": "m", "messages": []})
    reply, _ = send(request)
    assert not reply.ok and reply.status == 400 and reply.attempts == 1
    assert "'messages' must be a non-empty list" in reply.error


def test_a_wrong_key_fails_at_once_with_401() -> None:
    with FakeOpenAI(api_key="sk-right") as server:
        reply, _ = send(chat(server, "hi", headers={"Authorization": "Bearer sk-wrong"}))
        assert not reply.ok and reply.status == 401 and reply.attempts == 1
        assert reply.error == "HTTP 401: Incorrect API key provided."
        assert "sk-wrong" not in reply.error
        good, _ = send(chat(server, "hi", headers={"Authorization": "Bearer sk-right"}))
        assert good.ok


def test_retries_stop_after_max_retries(fake: FakeOpenAI, fast_backoff: None) -> None:
    reply, _ = send(chat(fake, "down #500x10"), max_retries=2, deadline_s=10)
    assert not reply.ok
    assert reply.attempts == 3 and reply.status == 500
    assert reply.error == "gave up after 3 attempts; last: HTTP 500: The server had an error (injected by marker #500)."
    assert fake.stats()["requests"] == 3


def test_no_retries_when_max_retries_is_zero(fake: FakeOpenAI) -> None:
    reply, _ = send(chat(fake, "once #503x1"), max_retries=0)
    assert not reply.ok and reply.attempts == 1
    assert reply.error.startswith("gave up after 1 attempts; last: HTTP 503")


# deadlines -------------------------------------------------------------------------------------
def test_a_stalled_call_ends_at_its_deadline_with_a_clear_error(fake: FakeOpenAI) -> None:
    reply, took = send(chat(fake, "stall #timeoutx1"), deadline_s=0.6)
    assert not reply.ok
    assert reply.status is None and reply.attempts == 1
    assert reply.error == "deadline of 0.6s leaves no time to retry after 1 attempt(s); last: timed out"
    assert 0.5 <= took < 1.4  # the deadline holds although the server stalls for 1.5s


def test_a_slow_reply_within_the_deadline_is_waited_for(fake: FakeOpenAI) -> None:
    # An attempt may use what is left of the call's deadline: a reply 1.5s late is not abandoned.
    # (So a stalled attempt is never retried: its timeout is the whole remaining deadline.)
    reply, took = send(chat(fake, "slow #timeoutx1"), deadline_s=10)
    assert reply.ok, reply.error
    assert reply.attempts == 1
    assert 1.4 <= took < 9.5


def test_retry_after_beyond_the_deadline_ends_the_call_with_a_clear_error(fake: FakeOpenAI,
                                                                          fast_backoff: None) -> None:
    reply, took = send(chat(fake, "always busy #429x9"), deadline_s=0.5)
    assert not reply.ok and reply.status == 429
    # One Retry-After (0.3s) fits in the deadline, a second does not (one, if the machine is slow).
    assert re.fullmatch(r"deadline of 0\.5s leaves no time to retry after [12] attempt\(s\); last: HTTP 429: "
                        r"Rate limit reached \(injected by marker #429\)\.", reply.error), reply.error
    assert fake.stats()["requests"] == reply.attempts
    assert took < 1.5


def test_the_wait_for_a_permit_does_not_spend_the_calls_deadline(fake: FakeOpenAI) -> None:
    p = permits(requests_per_minute=60)  # one a second
    first, _ = send(chat(fake, "first"), p)
    assert first.ok
    reply, took = send(chat(fake, "second"), p, deadline_s=0.3)  # its turn comes in about a second
    assert reply.ok and reply.attempts == 1
    assert 0.5 <= took < 3
    assert fake.stats()["requests"] == 2


def test_a_run_stopped_while_a_call_waited_for_its_turn_sends_nothing(fake: FakeOpenAI) -> None:
    p = permits(requests_per_minute=60)
    assert send(chat(fake, "first"), p)[0].ok

    async def cancelled() -> str | None:
        return "run cancelled"

    reply, _ = send(chat(fake, "second"), p, stopped=cancelled)
    assert (reply.ok, reply.error, reply.attempts) == (False, "run cancelled", 0)
    assert fake.stats()["requests"] == 1
    assert p.limiter.snapshot()["in_flight"] == 0  # its permit went back


def test_a_call_that_cannot_get_its_turn_within_the_queue_wait_says_so(fake: FakeOpenAI) -> None:
    p = permits(requests_per_minute=6)  # one every ~10s
    first, _ = send(chat(fake, "first"), p)
    assert first.ok
    reply, took = send(chat(fake, "second"), p, deadline_s=60, queue_wait_s=1.0)
    assert not reply.ok and reply.attempts == 0
    assert reply.error == "the rate limit allows no request within 1s"
    assert took < 0.5  # known at once
    assert fake.stats()["requests"] == 1


def test_connection_refused_is_retried_then_reported(fast_backoff: None) -> None:
    p = permits(failure_threshold=10)
    request = Request("POST", f"http://127.0.0.1:{closed_port()}/v1/chat/completions", json={"x": 1})
    reply, took = send(request, p, max_retries=2, deadline_s=10)
    assert not reply.ok and reply.status is None and reply.attempts == 3
    assert reply.error.startswith("gave up after 3 attempts; last: ConnectError")
    assert took < 5
    assert p.limiter.snapshot()["failures"] == 3


def test_a_provider_that_is_down_opens_the_circuit_and_later_calls_fail_fast(fast_backoff: None) -> None:
    p = permits(failure_threshold=2, cooldown_seconds=60)
    request = Request("POST", f"http://127.0.0.1:{closed_port()}/v1/chat/completions", json={"x": 1})
    first, _ = send(request, p, max_retries=5, deadline_s=10)
    assert not first.ok
    assert first.attempts == 2 and "circuit open after 2 consecutive provider failures" in first.error
    later, took = send(request, p, deadline_s=10)
    assert not later.ok and later.attempts == 0 and took < 0.5
    assert later.error.startswith("circuit open after 2 consecutive provider failures")


# permits always go back ------------------------------------------------------------------------
def test_a_body_that_cannot_be_sent_raises_and_returns_its_permit(fake: FakeOpenAI) -> None:
    p = permits(max_in_flight=1)
    request = Request("POST", f"{fake.base_url}/chat/completions", json={"when": date(2024, 1, 2)})
    with pytest.raises(TypeError, match="not JSON serializable"):  # a bug of the augmenter, not of a record
        send(request, p)
    snapshot = p.limiter.snapshot()
    assert snapshot["in_flight"] == 0 and snapshot["failures"] == 0
    assert send(chat(fake, "next"), p, deadline_s=2)[0].ok  # the place is free again


def test_a_cancelled_call_returns_its_permit(fake: FakeOpenAI) -> None:
    p = permits(max_in_flight=1)

    async def cancel_midway() -> None:
        task = asyncio.ensure_future(call(chat(fake, "stall #timeoutx1"), p, deadline_s=10, allow_hosts=LOOPBACK))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    snapshot = p.limiter.snapshot()
    assert snapshot["in_flight"] == 0 and snapshot["failures"] == 0


# headers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),  # unreadable ms: the seconds
    ({"retry-after": "whenever"}, None),
    ({}, None),
])
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(httpx.Headers(headers)) == expected


def test_retry_after_as_an_http_date() -> None:
    future = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    assert retry_after(httpx.Headers({"retry-after": future})) == pytest.approx(20, abs=1.5)
    past = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=20), usegmt=True)
    assert retry_after(httpx.Headers({"retry-after": past})) == 0.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("0.35s", 0.35), ("1h2m3s", 3723.0),
    ("2m", 120.0), ("1m30.5s", 90.5), (" 20ms ", 0.02), ("0.734s", 0.734),
    ("", None), (None, None), ("soon", None), ("5", None), ("1x", None),
])
def test_reset_durations(text: str | None, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_rate_headers_of_a_reply_reach_the_limiter(fake: FakeOpenAI) -> None:
    fake.configure(rpm=60)  # one a second: the reply says none are left until the window resets
    p = permits()
    sent_at = p.limiter.clock()
    reply, _ = send(chat(fake, "last one this second"), p)
    assert reply.ok
    # Paused past the send (the pause may already be over when a loaded machine looks at it).
    assert p.limiter._paused_until > sent_at


# what previews show ----------------------------------------------------------------------------
def test_public_masks_every_header_value_and_keeps_the_rest() -> None:
    request = Request(
        "POST", "https://api.example.com/v1/chat/completions", json={"model": "m"}, params={"a": "1"},
        headers={"Authorization": "Bearer sk-secret-1", "X-Api-Key": "sk-secret-2", "X-Custom-Token": "sk-secret-3"},
    )
    shown = request.public()
    assert shown == {
        "method": "POST", "url": "https://api.example.com/v1/chat/completions", "params": {"a": "1"},
        "headers": {"Authorization": "***", "X-Api-Key": "***", "X-Custom-Token": "***"},
        "json": {"model": "m"},
    }
    assert "sk-secret" not in repr(shown)
    assert request.headers["Authorization"] == "Bearer sk-secret-1"  # the request itself keeps its key


def test_public_leaves_out_what_a_request_does_not_have() -> None:
    assert Request("GET", "https://x.example/v1/enrich").public() == {"method": "GET", "url": "https://x.example/v1/enrich"}
