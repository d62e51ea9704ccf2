"""The per-caller daily spend ledger of the quota store: in memory (the named actor's state) and on
Redis, where every replica of every app spends from the same one."""

from __future__ import annotations

import uuid

import pytest

from augment_core.quotas import KeyQuotas, Quotas, RedisQuotas


def ledger_rules(quotas: Quotas, who: str) -> None:
    day = "2030-01-02"
    assert quotas.spent(who, day) == 0.0
    assert quotas.reserve_spend(who, day, 0.4, cap=1.0)
    assert quotas.reserve_spend(who, day, 0.4, cap=1.0)
    assert quotas.spent(who, day) == pytest.approx(0.8)  # reservations count against the cap
    assert not quotas.reserve_spend(who, day, 0.4, cap=1.0)  # past the cap: refused, nothing reserved
    quotas.settle_spend(who, day, reserved=0.4, spent=0.1)  # the call cost less than it reserved
    assert quotas.spent(who, day) == pytest.approx(0.5)
    assert quotas.reserve_spend(who, day, 0.4, cap=1.0)
    quotas.settle_spend(who, day, reserved=0.4, spent=0.3)
    quotas.settle_spend(who, day, reserved=0.4, spent=0.0)  # a failed call costs nothing
    assert quotas.spent(who, day) == pytest.approx(0.4)
    assert quotas.reserve_spend(who, "2030-01-03", 0.9, cap=1.0)  # a new UTC day, a fresh ledger
    assert quotas.reserve_spend(f"{who}-other", day, 0.9, cap=1.0)  # each caller spends alone
    assert quotas.spent(who, day) == pytest.approx(0.4)


def test_the_spend_ledger_reserves_up_to_the_cap_and_books_the_real_cost() -> None:
    ledger_rules(KeyQuotas(), "key:aug_00000000")


def test_the_in_memory_ledger_forgets_the_days_before_yesterday() -> None:
    quotas = KeyQuotas()
    for day in ("2030-01-01", "2030-01-02", "2030-01-03"):
        assert quotas.reserve_spend("a", day, 1.0, cap=2.0)
    assert set(quotas.spend) == {("a", "2030-01-02"), ("a", "2030-01-03")}


def test_the_redis_ledger_follows_the_same_rules_and_is_shared(redis_url: str) -> None:
    namespace = f"augment:test:{uuid.uuid4().hex}"
    first, second = RedisQuotas(redis_url, namespace), RedisQuotas(redis_url, namespace)
    try:
        ledger_rules(first, "key:aug_00000000")
        # Another replica sees the same ledger, and the cap counts what both reserved.
        assert second.spent("key:aug_00000000", "2030-01-02") == pytest.approx(0.4)
        assert second.reserve_spend("key:aug_00000000", "2030-01-02", 0.6, cap=1.0)
        assert not first.reserve_spend("key:aug_00000000", "2030-01-02", 0.01, cap=1.0)
        ttl = first.client.ttl(f"{namespace}:spend:2030-01-02:key:aug_00000000")
        assert 0 < ttl <= 2 * 86400  # Redis forgets a day's ledger by itself
    finally:
        for key in first.client.scan_iter(f"{namespace}:*"):
            first.client.delete(key)
