"""The rate limiter of one provider account, as its callers meet it: pacing, in-flight cap, token
budget, 429s and rate headers, the circuit, deadlines and leases of vanished holders.

Most tests run on an event loop with virtual time: sleeps and timeouts advance a clock instead of
waiting, so minutes of limiter behaviour take milliseconds and grant times are exact. One test
runs on the real clock to show the pacing holds there too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import augment_core.ratelimit as ratelimit
from augment_core.ratelimit import PACE, SLOWEST, Limits, Outcome, RateLimiter

T = TypeVar("T")
START = 1000.0  # virtual time starts well after 0, as the monotonic clock does


class VirtualClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def run_virtual(main: Callable[[VirtualClock], Awaitable[T]], real_seconds: float = 20.0) -> T:
    """Run `main(clock)` on an event loop whose time is `clock`: when nothing is ready, the loop
    jumps to the next timer instead of waiting for it."""
    clock = VirtualClock()
    loop = asyncio.new_event_loop()
    loop.time = clock  # type: ignore[method-assign]
    real_select = loop._selector.select  # type: ignore[attr-defined]
    give_up = time.monotonic() + real_seconds

    def select(timeout: float | None = None) -> Any:
        if time.monotonic() > give_up:
            raise RuntimeError("the virtual-time test did not finish: something waits forever")
        if timeout is None:  # nothing scheduled: only another thread could wake us
            return real_select(0.01)
        if timeout > 0:
            clock.now += timeout
        return real_select(0)

    loop._selector.select = select  # type: ignore[attr-defined]
    try:
        return loop.run_until_complete(main(clock))
    finally:
        loop.close()


def limiter(clock: VirtualClock, **limits: Any) -> RateLimiter:
    return RateLimiter(Limits(**limits), clock=clock)


def interval(rpm: float, factor: float = 1.0) -> float:
    return 60.0 / (rpm * PACE * factor)


# pacing ------------------------------------------------------------------------------------------
def test_requests_are_spaced_evenly_a_little_under_the_limit() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        rl = limiter(clock, requests_per_minute=600, max_in_flight=1000)

        async def one() -> float:
            grant = await rl.acquire()
            assert grant.granted, grant.reason
            rl.release(grant.permit, Outcome(status=200))
            return clock()

        return sorted(await asyncio.gather(*(one() for _ in range(60))))

    times = run_virtual(main)
    assert times[0] == START  # the first goes at once
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(interval(600)) and max(gaps) == pytest.approx(interval(600))
    per_second = Counter(int(t - START) for t in times)
    # 600/min is 10 a second: never more in any one-second window, and not much less either.
    assert max(per_second.values()) == 10
    assert all(count >= 9 for second, count in per_second.items() if second < max(per_second))
    assert times[-1] - times[0] == pytest.approx(59 * interval(600))  # 60 requests in ~6.0s, not 6.0s flat


def test_pacing_holds_on_the_real_clock() -> None:
    async def main() -> list[float]:
        rl = RateLimiter(Limits(requests_per_minute=1200))
        times = []
        for _ in range(8):
            grant = await rl.acquire()
            assert grant.granted
            times.append(time.monotonic())
            rl.release(grant.permit, Outcome(status=200))
        return times

    times = asyncio.run(main())
    # Never faster than the pace; sleeps may only make it later.
    assert times[-1] - times[0] >= 7 * interval(1200) - 0.005
    assert times[-1] - times[0] < 5.0  # bounded: 8 requests at 20/s take ~0.36s


def test_a_limiter_without_rate_limits_grants_at_once() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        rl = limiter(clock, max_in_flight=50)
        grants = [await rl.acquire(tokens=10_000) for _ in range(50)]
        assert all(g.granted for g in grants)
        assert len({g.permit for g in grants}) == 50  # every permit is its own
        assert rl.snapshot()["in_flight"] == 50
        return [g.waited for g in grants]

    assert run_virtual(main) == [0.0] * 50


# the in-flight cap -------------------------------------------------------------------------------
def test_max_in_flight_is_never_exceeded_by_many_concurrent_callers() -> None:
    async def main(clock: VirtualClock) -> tuple[int, int, dict[str, Any]]:
        rl = limiter(clock, max_in_flight=3)
        holding = peak = done = 0

        async def one(i: int) -> None:
            nonlocal holding, peak, done
            grant = await rl.acquire()
            assert grant.granted, grant.reason
            holding += 1
            peak = max(peak, holding)
            assert rl.snapshot()["in_flight"] <= 3
            await asyncio.sleep(0.5 + (i % 4) * 0.1)  # the call
            holding -= 1
            rl.release(grant.permit, Outcome(status=200))
            done += 1

        await asyncio.gather(*(one(i) for i in range(40)))
        return peak, done, rl.snapshot()

    peak, done, snapshot = run_virtual(main)
    assert peak == 3  # the cap is reached (not wasted) and never passed
    assert done == 40
    assert snapshot["in_flight"] == 0 and snapshot["granted"] == 40


def test_the_in_flight_cap_holds_while_callers_wait_for_the_pace() -> None:
    async def main(clock: VirtualClock) -> int:
        rl = limiter(clock, max_in_flight=2, requests_per_minute=60)
        peak = holding = 0

        async def one() -> None:
            nonlocal peak, holding
            grant = await rl.acquire()
            holding += 1
            peak = max(peak, holding, rl.snapshot()["in_flight"])
            await asyncio.sleep(5.0)
            holding -= 1
            rl.release(grant.permit, Outcome(status=200))

        await asyncio.gather(*(one() for _ in range(8)))
        return peak

    assert run_virtual(main) == 2


# tokens per minute -------------------------------------------------------------------------------
def test_tokens_per_minute_space_each_request_by_the_time_its_tokens_take() -> None:
    """Tokens are paced like requests: each grant books the time its tokens take at the paced
    rate, so the next request waits for the previous one's tokens, never a second's worth at once."""
    rate = 6000 * PACE / 60  # 98 tokens a second

    async def main(clock: VirtualClock) -> list[tuple[int, float]]:
        rl = limiter(clock, tokens_per_minute=6000)
        waits = []
        for tokens in (int(rate), int(rate), 10, 300, 10):
            grant = await rl.acquire(tokens=tokens)
            assert grant.granted
            waits.append((tokens, grant.waited))
            rl.release(grant.permit, Outcome(status=200))
        return waits

    waits = run_virtual(main)
    assert waits[0][1] == 0.0  # after an idle spell the first goes at once
    assert waits[1][1] == pytest.approx(int(rate) / rate)  # then waits for the first one's tokens
    assert waits[2][1] == pytest.approx(int(rate) / rate)
    assert waits[3][1] == pytest.approx(10 / rate)  # behind a small request, a short wait
    assert waits[4][1] == pytest.approx(300 / rate)  # behind a big one, ~3 s


def test_an_idle_spell_gives_no_burst_of_tokens() -> None:
    rate = 6000 * PACE / 60

    async def main(clock: VirtualClock) -> list[float]:
        rl = limiter(clock, tokens_per_minute=6000, max_in_flight=100)
        rl.release((await rl.acquire(tokens=50)).permit, Outcome(status=200))
        await asyncio.sleep(30)  # a long pause
        started = clock()

        async def one() -> float:
            grant = await rl.acquire(tokens=49)
            rl.release(grant.permit, Outcome(status=200))
            return clock() - started

        return sorted(await asyncio.gather(*(one() for _ in range(4))))

    times = run_virtual(main)
    assert times == pytest.approx([0.0, 49 / rate, 2 * 49 / rate, 3 * 49 / rate])


def test_tokens_used_correct_the_estimate() -> None:
    rate = 6000 * PACE / 60

    async def main(clock: VirtualClock, used: int) -> float:
        rl = limiter(clock, tokens_per_minute=6000)
        first = await rl.acquire(tokens=300)  # reserved 300 (an estimate with max output)
        rl.release(first.permit, Outcome(status=200, tokens=used))
        second = await rl.acquire(tokens=300)
        return second.waited

    as_estimated = run_virtual(lambda c: main(c, 300))
    used_less = run_virtual(lambda c: main(c, 30))
    assert as_estimated == pytest.approx(300 / rate, rel=0.02)
    assert used_less < as_estimated - 2.0  # the 270 unused tokens went back


def test_estimates_are_scaled_by_what_replies_used_so_the_token_limit_is_reached_and_kept() -> None:
    """Callers estimate 500 tokens (the prompt plus max_tokens) and replies use 50, a second after
    the grant. The limiter learns the ratio and books the used tokens: within a few seconds it
    grants at the token rate, and no 1-second window takes more than the provider allows before
    its last request (providers admit a request while the window has tokens left)."""
    budget = 100  # tokens a second: 6,000 a minute

    async def main(clock: VirtualClock) -> tuple[list[float], dict[str, Any]]:
        rl = limiter(clock, tokens_per_minute=6000, max_in_flight=1000)
        granted: list[float] = []

        async def one() -> None:
            grant = await rl.acquire(tokens=500)
            granted.append(clock())
            await asyncio.sleep(1.0)
            rl.release(grant.permit, Outcome(status=200, tokens=50))

        await asyncio.gather(*(one() for _ in range(250)))
        return granted, rl.snapshot()

    granted, snapshot = run_virtual(main)
    assert snapshot["token_ratio"] == pytest.approx(0.1)
    per_window = Counter(int(t - START) for t in granted)
    assert all((n - 1) * 50 < budget for n in per_window.values()), per_window
    span = granted[-1] - granted[0]
    assert 250 * 50 / span >= 0.95 * budget * PACE, span  # the slow first second costs little


def test_a_retry_keeps_its_place_ahead_of_callers_that_came_later() -> None:
    async def main(clock: VirtualClock) -> list[str]:
        rl = limiter(clock, requests_per_minute=60, max_in_flight=10)  # one a second
        order: list[str] = []
        first = await rl.acquire()

        async def later(name: str) -> None:
            grant = await rl.acquire()
            order.append(name)
            rl.release(grant.permit, Outcome(status=200))

        await asyncio.sleep(0.1)
        waiting = [asyncio.ensure_future(later(name)) for name in "BCD"]  # they came after A
        await asyncio.sleep(0.2)
        rl.release(first.permit, Outcome(status=500))  # the first attempt failed: try again
        retry = await rl.acquire(rank=first.rank)
        order.append("A")
        rl.release(retry.permit, Outcome(status=200))
        await asyncio.gather(*waiting)
        return order

    assert run_virtual(main) == ["A", "B", "C", "D"]


def test_urgent_callers_go_ahead_of_waiting_batch_callers_and_keep_their_order() -> None:
    async def main(clock: VirtualClock) -> list[str]:
        rl = limiter(clock, requests_per_minute=60, max_in_flight=100)  # one a second
        order: list[str] = []

        async def one(name: str, urgent: bool) -> None:
            grant = await rl.acquire(urgent=urgent)
            order.append(name)
            if name == "online-1" and order.count(name) == 1:  # its first attempt fails: a retry keeps its place
                rl.release(grant.permit, Outcome(status=500))
                retry = await rl.acquire(rank=grant.rank)
                order.append(name)
                rl.release(retry.permit, Outcome(status=200))
                return
            rl.release(grant.permit, Outcome(status=200))

        batch = [asyncio.ensure_future(one(f"batch-{i}", False)) for i in range(4)]
        await asyncio.sleep(0.5)  # batch-0 went; the other three wait their turn
        online = [asyncio.ensure_future(one(f"online-{i}", True)) for i in range(2)]
        await asyncio.gather(*batch, *online)
        return order

    assert run_virtual(main) == ["batch-0", "online-0", "online-1", "online-1", "batch-1", "batch-2", "batch-3"]


def test_urgent_callers_never_starve_a_batch_caller_that_waited_longer_than_their_lead() -> None:
    """A stream of urgent callers, one more arriving for every grant, beside one batch caller:
    the batch caller goes once it has waited URGENT_LEAD_SECONDS longer than the urgent
    newcomers, instead of never."""
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, requests_per_minute=600, max_in_flight=100)  # ten a second
        await rl.acquire()  # the pace is taken: everyone below waits
        done = asyncio.Event()

        async def urgent_stream() -> None:
            while not done.is_set():
                grant = await rl.acquire(urgent=True)
                rl.release(grant.permit, Outcome(status=200))

        streams = [asyncio.ensure_future(urgent_stream()) for _ in range(3)]
        await asyncio.sleep(0.05)
        started = clock()
        grant = await rl.acquire()
        waited = clock() - started
        done.set()
        rl.release(grant.permit, Outcome(status=200))
        await asyncio.gather(*streams)
        return waited

    waited = run_virtual(main)
    assert ratelimit.URGENT_LEAD_SECONDS - 0.5 <= waited <= ratelimit.URGENT_LEAD_SECONDS + 0.5


def test_a_waiter_that_gives_up_hands_the_turn_to_the_next() -> None:
    async def main(clock: VirtualClock) -> tuple[str, float]:
        rl = limiter(clock, requests_per_minute=60)
        await rl.acquire()
        head = asyncio.ensure_future(rl.acquire(max_wait=0.5))  # its slot is a second away
        behind = asyncio.ensure_future(rl.acquire())
        denied = await head
        grant = await behind
        assert grant.granted
        return denied.reason, clock() - START

    reason, at = run_virtual(main)
    assert reason == "the rate limit allows no request within 0.5s"
    assert at == pytest.approx(interval(60))


# 429s and rate headers ---------------------------------------------------------------------------
def test_a_429_with_retry_after_pauses_every_caller_and_lowers_the_pace() -> None:
    async def main(clock: VirtualClock) -> tuple[dict[str, Any], list[float], float]:
        rl = limiter(clock, requests_per_minute=600, max_in_flight=100)
        first = await rl.acquire()
        rl.release(first.permit, Outcome(status=429, retry_after=5.0))
        paused_at = clock()
        snapshot = rl.snapshot()

        async def one() -> float:
            grant = await rl.acquire()
            rl.release(grant.permit, Outcome(status=200))
            return clock() - paused_at

        after = sorted(await asyncio.gather(*(one() for _ in range(5))))
        return snapshot, after, rl.snapshot()["pace_factor"]

    snapshot, after, factor_after = run_virtual(main)
    assert snapshot["paused_for"] == pytest.approx(5.0)
    assert snapshot["pace_factor"] == pytest.approx(0.8)
    assert snapshot["rate_limited"] == 1
    assert after[0] == pytest.approx(5.0)  # nobody goes before the provider's Retry-After
    gaps = [b - a for a, b in zip(after, after[1:])]
    assert gaps[0] == pytest.approx(interval(600, 0.8))  # and then at the slower pace,
    assert min(gaps) >= interval(600, 0.8 + 0.01 * len(gaps)) - 1e-6  # which each success raises a little
    assert 0.8 < factor_after <= 1.0  # successes bring the pace back, a little each


def test_a_429_also_holds_back_callers_already_waiting_for_their_slot() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, requests_per_minute=60)  # one a second
        first = await rl.acquire()
        waiting = asyncio.ensure_future(rl.acquire())  # its slot is ~1s away
        await asyncio.sleep(0.5)
        rl.release(first.permit, Outcome(status=429, retry_after=3.0))
        grant = await waiting
        assert grant.granted
        return clock() - START

    assert run_virtual(main) >= 3.5 - 1e-6


def test_a_429_without_retry_after_pauses_a_second() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock)
        rl.release((await rl.acquire()).permit, Outcome(status=429))
        return (await rl.acquire()).waited

    assert run_virtual(main) == pytest.approx(1.0)


def test_repeated_429s_slow_the_pace_down_to_a_floor() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, requests_per_minute=6000, max_in_flight=100)
        for _ in range(30):
            grant = await rl.acquire()
            rl.release(grant.permit, Outcome(status=429, retry_after=0.01))
        return rl.snapshot()["pace_factor"]

    assert run_virtual(main) == SLOWEST


def test_no_tokens_remaining_pauses_until_the_reset() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, tokens_per_minute=60_000)
        grant = await rl.acquire(tokens=10)
        rl.release(grant.permit, Outcome(status=200, remaining_tokens=0, reset_tokens=0.7))
        return (await rl.acquire(tokens=10)).waited

    assert run_virtual(main) == pytest.approx(0.7)


def test_no_requests_remaining_pauses_until_the_reset() -> None:
    async def main(clock: VirtualClock) -> tuple[float, float, float]:
        rl = limiter(clock)
        grant = await rl.acquire()
        rl.release(grant.permit, Outcome(status=200, remaining_requests=0, reset_requests=1.5))
        paused = rl.snapshot()["paused_for"]
        after_reset = (await rl.acquire()).waited
        rl2 = limiter(clock)
        grant = await rl2.acquire()
        rl2.release(grant.permit, Outcome(status=200, remaining_requests=7, reset_requests=1.5))
        return paused, after_reset, (await rl2.acquire()).waited

    paused, after_reset, with_some_left = run_virtual(main)
    assert paused == pytest.approx(1.5)
    assert after_reset == pytest.approx(1.5)
    assert with_some_left == 0.0  # requests left: no pause


# the circuit -------------------------------------------------------------------------------------
async def fail(rl: RateLimiter, times: int, status: int | None = None) -> None:
    for _ in range(times):
        grant = await rl.acquire()
        assert grant.granted, grant.reason
        rl.release(grant.permit, Outcome(status=status))


@pytest.mark.parametrize("status", [None, 500, 503, 408])
def test_the_circuit_opens_after_consecutive_failures_and_denies_fast(status: int | None) -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=3, cooldown_seconds=30, requests_per_minute=6000)
        await fail(rl, 2, status)
        assert rl.snapshot()["circuit"] == "closed"  # below the threshold: still calling
        await fail(rl, 1, status)
        snapshot = rl.snapshot()
        assert snapshot["circuit"] == "open" and snapshot["circuit_opened"] == 1
        assert snapshot["consecutive_failures"] == 3
        before = clock()
        grant = await rl.acquire(max_wait=None)
        assert not grant.granted
        assert clock() == before  # denied at once, no waiting
        assert "circuit open after 3 consecutive provider failures" in grant.reason
        assert "next probe is allowed in 30s" in grant.reason
        assert rl.snapshot()["in_flight"] == 0 and rl.snapshot()["denied"] == 1

    run_virtual(main)


def test_half_open_lets_exactly_one_probe_through_and_a_success_closes_it() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=2, cooldown_seconds=10)
        await fail(rl, 2)
        await asyncio.sleep(5)
        assert not (await rl.acquire()).granted  # still cooling down
        assert "next probe is allowed in 5s" in (await rl.acquire()).reason
        await asyncio.sleep(5)
        assert rl.snapshot()["circuit"] == "half-open"
        probe = await rl.acquire()
        assert probe.granted
        others = [await rl.acquire() for _ in range(5)]  # while the probe is out
        assert not any(g.granted for g in others)
        assert all("circuit open" in g.reason for g in others)
        rl.release(probe.permit, Outcome(status=200))
        snapshot = rl.snapshot()
        assert snapshot["circuit"] == "closed" and snapshot["consecutive_failures"] == 0
        grants = [await rl.acquire() for _ in range(5)]
        assert all(g.granted for g in grants)

    run_virtual(main)


def test_a_failed_probe_reopens_the_circuit_for_another_cooldown() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=2, cooldown_seconds=10)
        await fail(rl, 2)
        await asyncio.sleep(10)
        probe = await rl.acquire()
        assert probe.granted
        rl.release(probe.permit, Outcome(status=502))
        snapshot = rl.snapshot()
        assert snapshot["circuit"] == "open" and snapshot["circuit_opened"] == 2
        denied = await rl.acquire()
        assert not denied.granted and "next probe is allowed in 10s" in denied.reason
        await asyncio.sleep(10)
        second_probe = await rl.acquire()
        assert second_probe.granted  # the next cooldown ends with a probe again
        rl.release(second_probe.permit, Outcome(status=200))
        assert rl.snapshot()["circuit"] == "closed"

    run_virtual(main)


def test_a_probe_answered_with_429_lets_the_next_caller_probe() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=1, cooldown_seconds=10)
        await fail(rl, 1)
        await asyncio.sleep(10)
        probe = await rl.acquire()
        rl.release(probe.permit, Outcome(status=429, retry_after=1))
        assert (await rl.acquire()).granted  # after the Retry-After, another probe goes

    run_virtual(main)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_answers_not_provider_failures(status: int) -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=3, cooldown_seconds=30)
        await fail(rl, 2)
        await fail(rl, 5, status)  # the provider answered: the request was at fault
        await fail(rl, 2)
        snapshot = rl.snapshot()
        assert snapshot["circuit"] == "closed" and snapshot["consecutive_failures"] == 2
        assert snapshot["failures"] == 4
        assert (await rl.acquire()).granted

    run_virtual(main)


def test_429s_do_not_open_the_circuit() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=2, cooldown_seconds=30)
        for _ in range(6):
            grant = await rl.acquire()
            assert grant.granted
            rl.release(grant.permit, Outcome(status=429, retry_after=0.1))
        assert rl.snapshot()["circuit"] == "closed"

    run_virtual(main)


# deadlines ---------------------------------------------------------------------------------------
def test_max_wait_denies_when_the_pace_allows_no_request_in_time() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, requests_per_minute=60)  # ~1.02s apart
        assert (await rl.acquire()).granted
        before = clock()
        denied = await rl.acquire(max_wait=0.5)
        assert not denied.granted
        assert denied.reason == "the rate limit allows no request within 0.5s"
        assert clock() == before  # known at once: no point waiting 0.5s to say no
        assert rl.snapshot()["in_flight"] == 1  # the place it held is given back
        assert (await rl.acquire(max_wait=2.0)).granted

    run_virtual(main)


def test_denied_requests_do_not_use_up_the_quota() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, requests_per_minute=60)
        assert (await rl.acquire()).granted
        for _ in range(5):  # callers with short deadlines give up...
            assert not (await rl.acquire(max_wait=0.5)).granted
        grant = await rl.acquire()  # ...and the next request still gets the next slot
        assert grant.granted
        return grant.waited

    assert run_virtual(main) == pytest.approx(interval(60))


def test_max_wait_denies_when_no_slot_frees_in_time() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, max_in_flight=1)
        held = await rl.acquire()
        denied = await rl.acquire(max_wait=2.5)
        assert not denied.granted and denied.reason == "no request slot free within 2.5s"
        assert clock() - START == pytest.approx(2.5, abs=0.01)  # it waited as long as allowed
        rl.release(held.permit, Outcome(status=200))
        assert (await rl.acquire(max_wait=0.1)).granted

    run_virtual(main)


def test_a_slot_freed_wakes_a_waiter_at_once() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, max_in_flight=1)
        held = await rl.acquire()
        waiter = asyncio.ensure_future(rl.acquire(max_wait=30))
        await asyncio.sleep(0.3)
        rl.release(held.permit, Outcome(status=200))
        grant = await waiter
        assert grant.granted
        return grant.waited

    assert run_virtual(main) == pytest.approx(0.3, abs=0.01)


# leases ------------------------------------------------------------------------------------------
def test_leases_of_vanished_holders_are_reclaimed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "LEASE_SECONDS", 5.0)

    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, max_in_flight=2)
        await rl.acquire()
        await rl.acquire()  # two holders that never come back
        grant = await rl.acquire()
        assert grant.granted
        assert 5.0 <= grant.waited <= 6.5  # after the lease ran out, not before
        snapshot = rl.snapshot()
        assert snapshot["reclaimed"] == 2 and snapshot["in_flight"] == 1
        rl.release(12345, Outcome(status=200))  # a late release of a reclaimed permit is harmless
        rl.release(grant.permit, Outcome(status=200))
        assert rl.snapshot()["in_flight"] == 0

    run_virtual(main)


def test_a_holder_says_how_long_it_may_hold_and_is_reclaimed_after_that() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, max_in_flight=1)
        await rl.acquire(hold=3.0)  # a caller killed mid-call: its longest attempt was 3 s
        grant = await rl.acquire(hold=3.0)
        assert grant.granted and 3.0 <= grant.waited <= 4.5  # not the default lease of minutes
        assert rl.snapshot()["reclaimed"] == 1

    run_virtual(main)


def test_a_vanished_probe_holder_does_not_keep_the_circuit_shut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "LEASE_SECONDS", 20.0)

    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, failure_threshold=1, cooldown_seconds=10)
        await fail(rl, 1)
        await asyncio.sleep(10)
        assert (await rl.acquire()).granted  # the probe, whose holder then vanishes
        await asyncio.sleep(30)  # its lease has long run out
        grant = await rl.acquire()
        assert grant.granted, grant.reason  # another probe may go

    run_virtual(main)


def test_a_caller_cancelled_while_waiting_gives_its_place_back() -> None:
    async def main(clock: VirtualClock) -> dict[str, Any]:
        rl = limiter(clock, requests_per_minute=60, max_in_flight=5)
        assert (await rl.acquire()).granted
        waiting = asyncio.ensure_future(rl.acquire())  # holds an in-flight place while it waits
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return rl.snapshot()

    assert run_virtual(main)["in_flight"] == 1


def test_a_permit_returned_unsent_frees_its_place_and_teaches_nothing() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, max_in_flight=1, failure_threshold=1, cooldown_seconds=10)
        grant = await rl.acquire()
        rl.release(grant.permit, Outcome(sent=False))  # e.g. a body that could not be encoded
        snapshot = rl.snapshot()
        assert snapshot["in_flight"] == 0 and snapshot["failures"] == 0 and snapshot["circuit"] == "closed"
        await fail(rl, 1)
        await asyncio.sleep(10)
        probe = await rl.acquire()
        rl.release(probe.permit, Outcome(sent=False))  # the probe's caller gave up
        assert rl.snapshot()["consecutive_failures"] == 1  # no verdict: neither closed nor reopened
        next_probe = await rl.acquire()
        assert next_probe.granted  # another caller may probe at once
        rl.release(next_probe.permit, Outcome(status=200))
        assert rl.snapshot()["circuit"] == "closed"

    run_virtual(main)


def test_configure_changes_the_limits_of_a_live_limiter() -> None:
    async def main(clock: VirtualClock) -> float:
        rl = limiter(clock, requests_per_minute=60)
        await rl.acquire()
        rl.configure(Limits(requests_per_minute=6000))
        await rl.acquire()  # still the slot booked under the old pace
        return (await rl.acquire()).waited

    assert run_virtual(main) == pytest.approx(interval(6000))


def test_a_renewed_permit_is_kept_and_a_vanished_holders_place_comes_back_after_its_hold() -> None:
    async def main(clock: VirtualClock) -> None:
        rl = limiter(clock, max_in_flight=2, requests_per_minute=6000)
        working = await rl.acquire(hold=15)
        vanished = await rl.acquire(hold=15)  # its process is killed: it never renews nor releases
        for _ in range(4):  # the working caller renews every 5 s, past its first 15 s
            await asyncio.sleep(5)
            assert rl.renew(working.permit, 15)
        assert rl.snapshot()["in_flight"] == 1 and rl.snapshot()["reclaimed"] == 1
        assert not rl.renew(vanished.permit, 15)  # lost: a late renewal does not bring it back
        assert (await rl.acquire(max_wait=0)).granted  # the vanished holder's place is free again
        rl.release(working.permit, Outcome(status=200))

    run_virtual(main)
