"""The result cache of provider calls on SQLite, PostgreSQL and Redis; its keys; and the store's
migration that adds columns to a database made by an older version."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from augment_core.cache import (
    CHUNK,
    DatabaseCache,
    NoCache,
    RedisCache,
    cache_for,
    cache_key,
    open_cache,
)
from augment_core.settings import Settings
from augment_core.store import MetadataStore, engine_url

VALUES: dict[str, Any] = {
    "values": {"industry": "software", "pitch": "Makes «tools» — ünïcode ✓", "employees": 12, "b2b": True,
               "score": 0.25, "tags": ["a", "b"], "none": None},
    "tokens_in": 100, "tokens_out": 20,
}


def keys(n: int) -> list[str]:
    """n keys no other test (or concurrent test run) uses."""
    run = uuid.uuid4().hex
    return [cache_key("test", run, i) for i in range(n)]


# the same tests on every backend -----------------------------------------------------------------
@pytest.fixture
def sqlite_cache(tmp_path: Path) -> Iterator[DatabaseCache]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    yield DatabaseCache(engine)
    engine.dispose()


@pytest.fixture
def postgres_cache(postgres_url: str) -> Iterator[DatabaseCache]:
    engine = sa.create_engine(engine_url(postgres_url))
    cache = DatabaseCache(engine)
    yield cache
    from augment_core.cache import cache_table

    with engine.begin() as conn:  # only the keys this test wrote: others may share the database
        conn.execute(cache_table.delete().where(cache_table.c.key.in_(cache.written)))  # type: ignore[attr-defined]
    engine.dispose()


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisCache]:
    cache = RedisCache(redis_url)
    cache.PREFIX = f"augment-test:{uuid.uuid4().hex}:"  # type: ignore[misc]
    yield cache
    stale = list(cache.client.scan_iter(match=cache.PREFIX + "*", count=1000))
    if stale:
        cache.client.delete(*stale)
    cache.client.close()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def cache(request: pytest.FixtureRequest) -> Any:
    cache = request.getfixturevalue(f"{request.param}_cache")
    written: list[str] = []
    put_many = cache.put_many

    def tracking_put_many(items: dict[str, Any]) -> None:
        written.extend(items)
        put_many(items)

    cache.written = written
    cache.put_many = tracking_put_many
    return cache


def test_an_empty_cache_finds_nothing(cache: Any) -> None:
    assert cache.get_many(keys(3)) == {}
    assert cache.get_many([]) == {}
    cache.put_many({})  # nothing to store is fine


def test_values_come_back_as_they_went_in(cache: Any) -> None:
    a, b, missing = keys(3)
    cache.put_many({a: VALUES, b: {"values": {"x": 1.5}}})
    assert cache.get_many([a, b, missing]) == {a: VALUES, b: {"values": {"x": 1.5}}}
    assert cache.get_many([a, a, a]) == {a: VALUES}  # a key asked twice is one answer


def test_the_first_value_stored_for_a_key_stays(cache: Any) -> None:
    a, b = keys(2)
    cache.put_many({a: {"values": {"v": "first"}}})
    cache.put_many({a: {"values": {"v": "second"}}, b: {"values": {"v": "new"}}})
    assert cache.get_many([a, b]) == {a: {"values": {"v": "first"}}, b: {"values": {"v": "new"}}}


def test_more_keys_than_one_query_holds(cache: Any) -> None:
    many = keys(2 * CHUNK + 203)
    items = {k: {"values": {"i": i}} for i, k in enumerate(many)}
    stored = dict(list(items.items())[: len(many) - 7])  # all but the last 7
    cache.put_many(stored)
    found = cache.get_many(many)
    assert found == stored
    assert len(found) == len(many) - 7


def test_two_caches_on_one_store_share_results(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = DatabaseCache(sa.create_engine(url)), DatabaseCache(sa.create_engine(url))
    (a,) = keys(1)
    first.put_many({a: VALUES})
    assert second.get_many([a]) == {a: VALUES}


# keys --------------------------------------------------------------------------------------------
def test_cache_keys_are_stable() -> None:
    parts = ("openai", "http://x/v1", {"b": 1, "a": [1, 2]}, "POST", "http://x/v1/chat", None, {"m": "é"})
    key = cache_key(*parts)
    assert key == cache_key(*parts)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    # The order of a mapping's keys does not matter; the canonical JSON is what is hashed,
    # so a key made by another process or version of Python is the same.
    assert key == cache_key(
        "openai", "http://x/v1", {"a": [1, 2], "b": 1}, "POST", "http://x/v1/chat", None, {"m": "é"}
    )
    canonical = json.dumps(list(parts), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert key == hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("changed", [
    ("openai", "http://x/v1", {"model": "m2", "temperature": 0}, "prompt"),  # the model
    ("openai", "http://x/v1", {"model": "m", "temperature": 0.1}, "prompt"),  # a parameter
    ("openai", "http://x/v1", {"model": "m", "temperature": 0}, "prompt!"),  # the rendered request
    ("openai", "http://y/v1", {"model": "m", "temperature": 0}, "prompt"),  # the endpoint
    ("http", "http://x/v1", {"model": "m", "temperature": 0}, "prompt"),  # the kind
    ("openai", "http://x/v1", {"model": "m", "temperature": 0, "schema": {}}, "prompt"),  # the schema
    ("openai", "http://x/v1", {"model": "m"}, "prompt"),  # a parameter left out
])
def test_cache_keys_change_with_anything_that_changes_the_result(changed: tuple[Any, ...]) -> None:
    assert cache_key("openai", "http://x/v1", {"model": "m", "temperature": 0}, "prompt") != cache_key(*changed)


def test_cache_keys_do_not_confuse_values() -> None:
    assert cache_key("a", "b") != cache_key("ab")
    assert cache_key("ab") != cache_key("a", "b")
    assert cache_key(1) != cache_key("1")
    assert cache_key(1) != cache_key(1.5)
    assert cache_key(None) != cache_key("None")
    assert cache_key(True) != cache_key(1)
    assert cache_key([1, 2]) != cache_key([2, 1])


# choosing the backend ----------------------------------------------------------------------------
def test_the_backend_follows_the_settings(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    assert isinstance(open_cache(Settings(database_url=url, cache_backend="off")), NoCache)
    assert isinstance(open_cache(Settings(database_url=url, cache_backend="database")), DatabaseCache)
    assert isinstance(open_cache(Settings(database_url=url, cache_backend="redis", redis_url=redis_url)), RedisCache)
    # One cache (and one engine or client) per configuration in a process.
    assert open_cache(Settings(database_url=url)) is open_cache(Settings(database_url=url))
    cache_for.cache_clear()


def test_no_cache_remembers_nothing() -> None:
    cache = NoCache()
    cache.put_many({"k": VALUES})
    assert cache.get_many(["k"]) == {}


def test_the_database_cache_lives_in_the_metadata_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    cache = open_cache(Settings(database_url=url))
    (a,) = keys(1)
    cache.put_many({a: VALUES})
    cache_for.cache_clear()
    again = open_cache(Settings(database_url=url))  # a later process
    assert again is not cache and again.get_many([a]) == {a: VALUES}
    cache_for.cache_clear()


# the store's migration ---------------------------------------------------------------------------
OLD_RUNS = """
CREATE TABLE runs (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    workflow VARCHAR(200) NOT NULL,
    workflow_version INTEGER NOT NULL,
    spec_path TEXT NOT NULL,
    status VARCHAR(16) NOT NULL,
    steps JSON NOT NULL,
    counts JSON NOT NULL,
    error TEXT,
    output JSON NOT NULL,
    created_at DATETIME NOT NULL,
    started_at DATETIME,
    finished_at DATETIME,
    heartbeat_at DATETIME
)
"""


def test_a_store_made_before_cost_existed_gains_the_column_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_RUNS)
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old-run", "orgs", 1, "/specs/orgs.yaml", "succeeded",
             json.dumps([{"name": "validate", "state": "succeeded", "rows": 3}]),
             json.dumps({"in": 3, "valid": 3, "quarantined": 0, "augmented": 3, "failed": 0, "skipped": 0}),
             None, json.dumps({"dataset": "orgs", "version": 1}), "2024-01-02 03:04:05.000000",
             "2024-01-02 03:04:05.000000", "2024-01-02 03:04:09.000000", None),
        )
    conn.close()

    store = MetadataStore(f"sqlite:///{path}")
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("runs")}
    assert "cost" in columns
    old = store.get_run("old-run")
    assert old.cost is None
    assert old.status == "succeeded" and old.counts["in"] == 3 and old.output == {"dataset": "orgs", "version": 1}
    assert old.duration_seconds == pytest.approx(4.0)
    assert [r.id for r in store.list_runs()] == ["old-run"]

    # New runs use the column; the old row stays as it was.
    store.create_run("new-run", "orgs", 1, "/specs/orgs.yaml", ["validate"])
    cost = {"total_usd": 0.01, "budget_usd": None, "budget_exhausted": False, "steps": {}}
    assert store.finish_run("new-run", "succeeded", cost=cost)
    assert store.get_run("new-run").cost == cost
    assert store.get_run("old-run").cost is None
    store.engine.dispose()

    # Opening it again (another process, a later version) changes nothing.
    again = MetadataStore(f"sqlite:///{path}")
    assert again.get_run("new-run").cost == cost
    assert [c["name"] for c in sa.inspect(again.engine).get_columns("runs")].count("cost") == 1
    again.engine.dispose()
