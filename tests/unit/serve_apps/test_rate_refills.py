"""A caller's requests that find the replica's booked rate used up share one round trip to the
quota store at a time, then take from what it booked."""

from __future__ import annotations

import asyncio
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
