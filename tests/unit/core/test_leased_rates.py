"""Request rates booked a few at a time (augment_core.quotas: `Quotas.lease`, `LeasedRates`): the
same GCRA as `admit`, in memory and on Redis, and a replica that asks the shared store once per
lease instead of once per request without letting more through than the rate and burst."""

from __future__ import annotations

import uuid

import pytest

from augment_core.quotas import KeyQuotas, LeasedRates, Quotas, RedisQuotas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A quota store that counts its round trips."""

    def __init__(self, inner: Quotas) -> None:
        self.inner, self.asked = inner, 0

    def lease(self, who: str, per_minute: int, burst: int, want: int, returned: int = 0) -> tuple[int, float]:
        self.asked += 1
        return self.inner.lease(who, per_minute, burst, want, returned)


def test_a_lease_books_what_admit_would_let_through_one_after_the_other() -> None:
    clock = Clock()
    quotas = KeyQuotas(clock=clock)
    assert quotas.lease("k", 60, 5, want=3) == (3, 0.0)
    assert quotas.lease("k", 60, 5, want=3) == (2, 0.0)  # the burst has 2 left
    booked, wait = quotas.lease("k", 60, 5, want=3)
    assert booked == 0 and wait == pytest.approx(1.0)
    assert quotas.admit("k", 60, 5) == pytest.approx(1.0)  # admit sees the same clock
    assert quotas.lease("k", 60, 5, want=1, returned=2) == (1, 0.0)  # two given back: one of them booked again
    assert quotas.admit("k", 60, 5) == 0.0
    assert quotas.admit("k", 60, 5) == pytest.approx(1.0)
    clock.now += 2.0
    assert quotas.lease("k", 60, 5, want=9) == (2, 0.0)  # two seconds at one a second


def test_the_redis_lease_follows_the_same_rules(redis_url: str) -> None:
    quotas = RedisQuotas(redis_url, namespace=f"augment-test:{uuid.uuid4().hex}")
    assert quotas.lease("k", 1, 5, want=3) == (3, 0.0)
    assert quotas.lease("k", 1, 5, want=3) == (2, 0.0)
    booked, wait = quotas.lease("k", 1, 5, want=3)
    assert booked == 0 and 59 < wait <= 60
    assert quotas.lease("k", 1, 5, want=1, returned=2) == (1, 0.0)
    assert quotas.admit("k", 1, 5) == 0.0
    assert quotas.admit("k", 1, 5) > 59


def test_a_slow_caller_books_one_request_per_round_trip() -> None:
    clock = Clock()
    store = Counting(KeyQuotas(clock=clock))
    rates = LeasedRates(store, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert rates.admit("k", 600, 30) == 0.0
        clock.now += 1.0
    assert store.asked == 5 and store.inner.tat["k"] == pytest.approx(clock.now - 1.0 + 0.1)


def test_a_fast_caller_is_let_through_locally_and_the_store_is_asked_once_a_lease() -> None:
    clock = Clock()
    store = Counting(KeyQuotas(clock=clock))
    rates = LeasedRates(store, clock=clock, lease_seconds=0.1)  # type: ignore[arg-type]
    for _ in range(1000):  # 200 requests a second for 5 s, of a rate that allows them all
        assert rates.admit("k", 60_000, 1000) == 0.0
        clock.now += 0.005
    assert store.asked < 120  # about one round trip per lease of ~20 requests, not 1000


def test_replicas_together_never_let_more_through_than_the_rate_and_burst() -> None:
    clock = Clock()
    store = KeyQuotas(clock=clock)
    replicas = [LeasedRates(store, clock=clock, lease_seconds=0.1) for _ in range(3)]
    admitted = 0
    for i in range(3000):  # 300 requests a second for 10 s over three replicas; the key allows 60/s, burst 10
        if replicas[i % 3].admit("k", 3600, 10) == 0.0:
            admitted += 1
        clock.now += 1 / 300
    # 10 s at 60/s plus the burst, plus at most one lease period's worth (0.1 s at 60/s)
    assert 560 <= admitted <= 600 + 10 + 6


def test_unused_permits_go_back_when_their_lease_ends() -> None:
    clock = Clock()
    store = KeyQuotas(clock=clock)
    rates = LeasedRates(store, clock=clock, lease_seconds=0.1)
    for _ in range(6):  # fast enough that a lease of several requests is booked
        assert rates.admit("k", 60, 10) == 0.0
        clock.now += 0.001
    booked_ahead = rates._leases["k"].left
    assert booked_ahead > 0
    clock.now += 0.2  # the lease ends unused; another replica (the store itself here) gets those requests
    other = [store.admit("k", 60, 10) for _ in range(10)]
    assert other.count(0.0) == 0  # they are still booked until this replica gives them back
    assert rates.admit("k", 60, 10) == 0.0  # gives them back, and books this one (and maybe more)
    booked_again = 1 + rates._leases["k"].left
    assert [store.admit("k", 60, 10) for _ in range(booked_ahead)].count(0.0) == booked_ahead - booked_again


def test_a_store_that_fails_keeps_the_permits_to_give_back() -> None:
    clock = Clock()

    class Failing:
        def lease(self, *args: object) -> tuple[int, float]:
            raise ConnectionError("down")

    store = KeyQuotas(clock=clock)
    rates = LeasedRates(store, clock=clock, lease_seconds=0.1)
    for _ in range(5):
        rates.admit("k", 60, 10)
        clock.now += 0.001
    left = rates._leases["k"].left
    clock.now += 0.2
    rates.store = Failing()  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        rates.admit("k", 60, 10)
    assert rates._leases["k"].left == left


def book_ahead_as_the_gateway_does(rates: LeasedRates, who: str, per_minute: int, burst: int) -> float:
    """A request as the gateway lets it through: locally, booking ahead when the share runs low."""
    if rates.take_local(who):
        if rates.running_low(who):
            rates.book_ahead(who, per_minute, burst)
        return 0.0
    return rates.admit(who, per_minute, burst)


def test_a_fast_caller_booking_ahead_never_waits_on_a_round_trip_for_a_request() -> None:
    clock = Clock()
    store = Counting(KeyQuotas(clock=clock))
    rates = LeasedRates(store, clock=clock, lease_seconds=0.1)  # type: ignore[arg-type]
    for _ in range(20):  # the first requests: no share yet, each books
        assert rates.admit("k", 60_000, 1000) == 0.0
        clock.now += 0.005
    on_a_trip = 0
    for _ in range(1000):  # 200 requests a second for 5 s
        if not rates.take_local("k"):
            on_a_trip += 1
            assert rates.admit("k", 60_000, 1000) == 0.0
        elif rates.running_low("k"):
            assert rates.book_ahead("k", 60_000, 1000) == 0.0
        clock.now += 0.005
    assert on_a_trip == 0
    assert store.asked < 20 + 250  # a round trip per quarter lease or so, not one a request


def test_running_low_is_the_last_quarter_of_a_valid_share() -> None:
    clock = Clock()
    rates = LeasedRates(KeyQuotas(clock=clock), clock=clock, lease_seconds=0.1)
    assert not rates.running_low("k")  # nothing booked
    rates.admit("k", 60_000, 1000)
    clock.now += 0.0125
    rates.admit("k", 60_000, 1000)  # 8 requests in the last 0.1 s: booked 8, took one
    lease = rates._leases["k"]
    assert (lease.booked, lease.left) == (8, 7)
    taken = 0
    while not rates.running_low("k"):
        assert rates.take_local("k")
        taken += 1
    assert lease.left == 2 and taken == 5
    assert rates.book_ahead("k", 60_000, 1000) == 0.0 and lease.left > 2  # the new share joins the two left
    clock.now += 1.0
    assert not rates.running_low("k")  # an expired share is not running low: it is gone


def test_booking_ahead_keeps_the_replicas_within_the_rate_and_burst() -> None:
    clock = Clock()
    store = KeyQuotas(clock=clock)
    replicas = [LeasedRates(store, clock=clock, lease_seconds=0.1) for _ in range(3)]
    admitted = 0
    for i in range(3000):  # as test_replicas_together_never_let_more_through_than_the_rate_and_burst
        if book_ahead_as_the_gateway_does(replicas[i % 3], "k", 3600, 10) == 0.0:
            admitted += 1
        clock.now += 1 / 300
    assert 560 <= admitted <= 600 + 10 + 6
