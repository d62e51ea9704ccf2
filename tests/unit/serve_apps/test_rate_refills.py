"""A caller's requests that find the replica's booked rate used up share one round trip to the
quota store at a time, then take from what it booked."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from types import SimpleNamespace

import pytest

from serve_apps.gateway.api_auth import RateRefills
from serve_apps.gateway.gate import QuotaUnavailable


class FakeGate:
    """Books `per_trip` requests a round trip (the first goes at once, the rest are kept locally),
    or refuses with `wait` seconds once `capacity` is used; each round trip takes 50 ms."""

    def __init__(self, per_trip: int, capacity: int = 1_000, fail: bool = False) -> None:
        self.settings = SimpleNamespace(api_burst=30)
        self.per_trip, self.capacity, self.fail = per_trip, capacity, fail
        self.trips = 0
        self.in_flight = self.most_in_flight = 0
        self.local = 0
        self.lock = threading.Lock()

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        with self.lock:
            self.trips += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.05)
        with self.lock:
            self.in_flight -= 1
            if self.fail:
                raise QuotaUnavailable("the request rate")
            booked = min(self.per_trip, self.capacity)
            self.capacity -= booked
            if booked == 0:
                return 2.5
            self.local += booked - 1
            return 0.0

    def book_ahead(self, who: str, per_minute: int, burst: int) -> float:
        """As admit, with no request taking the first booked."""
        with self.lock:
            self.local += 1  # admit keeps all but one
        try:
            return self.admit(who, per_minute, burst)
        except QuotaUnavailable:
            with self.lock:
                self.local -= 1
            raise

    def admit_local(self, who: str) -> bool:
        with self.lock:
            if self.local > 0:
                self.local -= 1
                return True
            return False


def burst(gate: FakeGate, n: int) -> list[float | str]:
    refills = RateRefills()

    async def one() -> float | str:
        try:
            return await refills.admit(gate, "key-1", 600)  # type: ignore[arg-type]
        except QuotaUnavailable:
            return "unavailable"

    async def all_of_them() -> list[float | str]:
        return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(all_of_them())


def test_waiting_requests_share_one_round_trip_at_a_time() -> None:
    gate = FakeGate(per_trip=10)
    assert burst(gate, 25) == [0.0] * 25
    assert gate.most_in_flight == 1
    assert gate.trips == 3  # 10 + 10 + 5 of 10: not one trip a request


def test_when_the_rate_is_used_up_the_waiting_requests_are_refused_with_its_wait() -> None:
    gate = FakeGate(per_trip=10, capacity=10)
    answers = burst(gate, 25)
    assert answers.count(0.0) == 10 and answers.count(2.5) == 15
    assert gate.trips == 2 and gate.most_in_flight == 1


@pytest.mark.parametrize("n", [1, 5])
def test_a_store_that_cannot_answer_fails_every_waiting_request(n: int) -> None:
    gate = FakeGate(per_trip=10, fail=True)
    assert burst(gate, n) == ["unavailable"] * n
    assert gate.trips == 1


def test_booking_ahead_runs_in_the_background_and_requests_that_run_out_wait_for_it() -> None:
    gate = FakeGate(per_trip=10)

    async def scenario() -> list[float]:
        refills = RateRefills()
        began = time.perf_counter()
        refills.book_ahead(gate, "key-1", 600)  # type: ignore[arg-type]
        refills.book_ahead(gate, "key-1", 600)  # type: ignore[arg-type]  # one on its way already
        assert time.perf_counter() - began < 0.04  # neither waited for the round trip
        return list(await asyncio.gather(*(refills.admit(gate, "key-1", 600) for _ in range(5))))  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == [0.0] * 5
    assert gate.trips == 1 and gate.local == 5  # the five took from the one booking


def test_a_failed_booking_ahead_is_no_loop_error_and_the_next_request_asks_again() -> None:
    gate = FakeGate(per_trip=10, fail=True)
    errors: list[dict[str, object]] = []

    async def scenario() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        refills = RateRefills()
        refills.book_ahead(gate, "key-1", 600)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        gc.collect()
        try:
            await refills.admit(gate, "key-1", 600)  # type: ignore[arg-type]
        except QuotaUnavailable:
            return "unavailable"
        return "admitted"

    assert asyncio.run(scenario()) == "unavailable"
    assert gate.trips == 2 and errors == []
