"""Retention (`augment gc`) on SQLite, PostgreSQL and Redis: what is old goes; nothing a live run,
a resumable run or a consumer group that has not read its events needs goes with it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import augment_core.events as events_module
from actors.runs import refuse_unresumable
from augment_core.audit import list_entries, record
from augment_core.cache import DatabaseCache, RedisCache, cache_key, cache_table
from augment_core.events import DatabaseEventBus, Event, RedisEventBus, event_dead_letters_table
from augment_core.retention import collect_garbage
from augment_core.settings import Settings
from augment_core.store import MetadataStore, StepState, audit_table, engine_url, open_store, runs_table, utcnow

NOW = utcnow()
DAY = dt.timedelta(days=1)
RETENTION = dict(retention_event_days=30, retention_dead_letter_days=30, retention_audit_days=365,
                 retention_cache_days=5, retention_resumable_days=30, retention_stream_maxlen=0)


@dataclass
class Backend:
    name: str
    settings: Settings
    store: MetadataStore
    bus: DatabaseEventBus | RedisEventBus
    cache: DatabaseCache | RedisCache

    def gc(self, dry_run: bool = False, **changes: Any) -> Any:
        settings = self.settings.model_copy(update=changes)
        return collect_garbage(settings, dry_run=dry_run, bus=self.bus, cache=self.cache)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    sqlite = f"sqlite:///{tmp_path / 'augment.db'}"
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        settings = Settings(database_url=sqlite, redis_url=redis_url, storage_root=str(tmp_path), **RETENTION)
        prefix = f"augment-test:{uuid.uuid4().hex}"
        bus = RedisEventBus(redis_url)
        bus.PREFIX = f"{prefix}:events"  # type: ignore[misc] # this test's streams only: Redis is shared
        cache = RedisCache(redis_url)
        cache.PREFIX = f"{prefix}:cache:"  # type: ignore[misc]
        yield Backend("redis", settings, open_store(settings), bus, cache)
        for key in bus.client.scan_iter(match=f"{prefix}:*", count=1000):
            bus.client.delete(key)
        return
    if request.param == "sqlite":
        url = sqlite
    else:  # a schema of this test's own: the shared database's other tables are not this test's to prune
        base = request.getfixturevalue("postgres_url")
        schema = f"gc_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(engine_url(base))
        with admin.begin() as conn:
            conn.execute(sa.text(f'create schema "{schema}"'))
        url = f"{base}?options=-csearch_path%3D{schema}"
    settings = Settings(database_url=url, redis_url=None, storage_root=str(tmp_path), **RETENTION)
    store = open_store(settings)
    yield Backend(request.param, settings, store, DatabaseEventBus(url), DatabaseCache(store.engine))
    if request.param == "postgres":
        store.engine.dispose()
        with admin.begin() as conn:  # only the schema this test made
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def make_run(b: Backend, status: str, created: dt.datetime, finished: dt.datetime | None = None) -> str:
    run_id = f"r-{uuid.uuid4().hex[:12]}"
    b.store.create_run(run_id, "w", 1, "/w.yaml", ["validate", "write"], spec={"name": "w"})
    with b.store.engine.begin() as conn:
        conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(
            status=status, created_at=created, started_at=created, finished_at=finished,
            heartbeat_at=NOW if status == "running" else created,
            error="driver lost: no heartbeat" if status == "failed" else None))
    return run_id


def publish_at(b: Backend, monkeypatch: pytest.MonkeyPatch, run_id: str, when: dt.datetime, n: int = 2) -> None:
    """n events of the run as if published at `when` (their time; Redis stream ids stay now)."""
    with monkeypatch.context() as m:
        m.setattr(events_module, "_now", lambda: when.isoformat())
        b.bus.publish(run_id, "run.started", {"n": 0})
        for i in range(1, n):
            b.bus.publish(run_id, "step.progress", {"n": i})


def event_types(b: Backend, run_id: str) -> list[str]:
    return [e.type for e in b.bus.read(run_id)]


def put_cache(b: Backend, when: dt.datetime, used: dt.datetime | None = None) -> str:
    """One cache entry stored at `when` and last used at `used`."""
    key = cache_key("gc-test", uuid.uuid4().hex)
    b.cache.put_many({key: {"values": {"x": 1}}})
    last = used or when
    if isinstance(b.cache, RedisCache):
        client, name = b.cache.client, b.cache.PREFIX + key
        idle = int((NOW - last).total_seconds())
        client.restore(name, 0, client.dump(name), replace=True, idletime=idle)
    else:
        with b.cache.engine.begin() as conn:
            conn.execute(cache_table.update().where(cache_table.c.key == key).values(created_at=when, used_at=used))
    return key


def cached(b: Backend, key: str) -> bool:
    if isinstance(b.cache, RedisCache):  # without touching it (a lookup would make it recent)
        return bool(b.cache.client.exists(b.cache.PREFIX + key))
    with b.cache.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(cache_table.c.key == key)).scalar_one() == 1


def dead_letter_at(b: Backend, group: str, when: dt.datetime) -> None:
    event = Event(run_id="x", seq=1, type="run.started", at=when.isoformat())
    if isinstance(b.bus, RedisEventBus):  # a dead letter's time is its stream id
        b.bus.client.xadd(f"{b.bus.PREFIX}:dead:{group}", {"group": group, "consumer": "c", "message_id": "0-1",
                          "error": "boom", "event": event.model_dump_json(), "at": when.isoformat()},
                          id=f"{int(when.timestamp() * 1000)}-0")
    else:
        with b.bus.engine.begin() as conn:
            conn.execute(event_dead_letters_table.insert().values(
                group=group, consumer="c", event_id=0, error="boom", event=event.model_dump_json(),
                at=when.isoformat()))


def audit_at(b: Backend, target: str, when: dt.datetime) -> None:
    record(b.store, "tester", "test.gc", target)
    with b.store.engine.begin() as conn:
        conn.execute(audit_table.update().where(audit_table.c.target == target).values(at=when))


def audit_targets(b: Backend) -> set[str]:
    return {e.target for e in list_entries(b.store, limit=10_000, action="test.gc")}


def test_gc_removes_what_is_old_and_keeps_what_live_and_resumable_runs_and_consumers_need(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend
    # A run that has been running for 100 days (a stream consumer, a huge batch), events old and new;
    # a cache entry it hit 50 days ago.
    live = make_run(b, "running", NOW - 100 * DAY)
    publish_at(b, monkeypatch, live, NOW - 100 * DAY)
    publish_at(b, monkeypatch, live, NOW)
    live_hit = put_cache(b, NOW - 300 * DAY, used=NOW - 50 * DAY)
    # A run that failed 10 days ago and was not resumed yet: the entries it used (one stored long
    # ago and hit by it, one it stored) are older than the cache's 5 days.
    resumable = make_run(b, "failed", NOW - 12 * DAY, NOW - 10 * DAY)
    publish_at(b, monkeypatch, resumable, NOW - 12 * DAY, n=3)
    resumable_hit = put_cache(b, NOW - 400 * DAY, used=NOW - 11 * DAY)
    resumable_own = put_cache(b, NOW - 11 * DAY)
    # Runs that ended long ago: one succeeded, one failed beyond the resumable window.
    old = make_run(b, "succeeded", NOW - 400 * DAY, NOW - 399 * DAY)
    publish_at(b, monkeypatch, old, NOW - 400 * DAY, n=3)
    old_failed = make_run(b, "failed", NOW - 200 * DAY, NOW - 199 * DAY)
    publish_at(b, monkeypatch, old_failed, NOW - 200 * DAY)
    # (Redis's idle clock wraps after 194 days: these ages stay below that)
    old_entries = [put_cache(b, NOW - 150 * DAY), put_cache(b, NOW - 300 * DAY, used=NOW - 120 * DAY)]
    recent_entry = put_cache(b, NOW - DAY)
    # A consumer group that read and acked everything so far.
    assert b.bus.consume("caught-up", "c", lambda e: None, max_events=1000, idle_seconds=1.5) > 0
    # A long-ended run whose events the group has not read yet (the database's events table is
    # also the cluster-wide stream: its rows must stay until the group has them).
    unread = make_run(b, "succeeded", NOW - 380 * DAY, NOW - 379 * DAY)
    publish_at(b, monkeypatch, unread, NOW - 380 * DAY)
    # An old run with one recent event (a review decision on its version): it keeps its stream for now.
    reviewed = make_run(b, "succeeded", NOW - 390 * DAY, NOW - 389 * DAY)
    publish_at(b, monkeypatch, reviewed, NOW - 390 * DAY)
    b.bus.publish(reviewed, "review.accepted", {"item": 1})
    dead_letter_at(b, "caught-up", NOW - 100 * DAY)
    dead_letter_at(b, "caught-up", NOW - DAY)
    audit_at(b, f"old-{uuid.uuid4().hex}", NOW - 400 * DAY)
    audit_at(b, recent_audit := f"new-{uuid.uuid4().hex}", NOW - 300 * DAY)

    dry = b.gc(dry_run=True)
    assert event_types(b, old) and cached(b, old_entries[0]) and len(audit_targets(b)) == 2  # nothing went
    report = b.gc()
    assert report.errors == {}
    assert dry.removed == report.removed

    # Gone: the long-ended runs' events, unused cache entries, old dead letters and audit entries.
    assert event_types(b, old) == [] and event_types(b, old_failed) == []
    assert not any(cached(b, k) for k in old_entries)
    assert len(b.bus.dead_letters("caught-up")) == 1
    assert audit_targets(b) == {recent_audit}
    # Kept: everything of the live run, the resumable run's events and cache entries, recent entries.
    assert event_types(b, live) == ["run.started", "step.progress"] * 2
    assert event_types(b, resumable) == ["run.started", "step.progress", "step.progress"]
    assert all(cached(b, k) for k in (live_hit, resumable_hit, resumable_own, recent_entry))
    assert event_types(b, reviewed) == ["run.started", "step.progress", "review.accepted"]

    expected = {"events": 3 + 2, "cache": 2, "dead_letters": 1, "audit": 1}
    if b.name == "redis":  # a run's stream goes whole; the cluster-wide stream (new ids) is not old
        assert event_types(b, unread) == []
        expected["events"] += 2
    else:  # the group has not read them: they stay, and the report says who holds them
        assert event_types(b, unread) == ["run.started", "step.progress"]
        assert any("'caught-up'" in note for note in report.held)
    assert {k: report.removed[k] for k in expected} == expected
    # Once the group has read them, the next pass removes them (the database's rows one by one:
    # the reviewed run's old ones too, not its recent one).
    b.bus.consume("caught-up", "c", lambda e: None, max_events=1000, idle_seconds=1.5)
    assert b.gc().removed["events"] == (0 if b.name == "redis" else 2 + 2)
    assert event_types(b, unread) == []
    assert event_types(b, reviewed)[-1:] == ["review.accepted"]

    # The failed run can still be resumed, from its cached results: nothing it needs went.
    refuse_unresumable(b.store.get_run(resumable))
    assert b.cache.get_many([resumable_hit, resumable_own]).keys() == {resumable_hit, resumable_own}
    assert b.store.reopen_run(resumable, [StepState(name="validate").model_dump()])
    b.bus.publish(resumable, "run.started", {"resume": True})
    assert event_types(b, resumable)[-1] == "run.started"
    # While it runs again (live, whatever its age), gc keeps its events and entries.
    b.gc(retention_event_days=1, retention_cache_days=1, retention_resumable_days=1)
    assert len(event_types(b, resumable)) == 4 and cached(b, resumable_hit)


def test_a_resumable_run_keeps_its_entries_only_for_retention_resumable_days(backend: Backend) -> None:
    b = backend
    make_run(b, "cancelled", NOW - 40 * DAY, NOW - 35 * DAY)
    hit = put_cache(b, NOW - 39 * DAY)
    assert b.gc(retention_resumable_days=0).removed["cache"] == 0  # 0: for ever
    assert cached(b, hit)
    assert b.gc().removed["cache"] == 1  # ended 35 days ago, beyond 30
    assert not cached(b, hit)


def test_a_lookup_marks_an_entry_used_and_keeps_it(backend: Backend) -> None:
    b = backend
    hit, unused = put_cache(b, NOW - 20 * DAY), put_cache(b, NOW - 20 * DAY)
    assert b.cache.get_many([hit]) == {hit: {"values": {"x": 1}}}
    assert b.gc().removed["cache"] == 1
    assert cached(b, hit) and not cached(b, unused)


def test_the_cache_cap_removes_the_least_recently_used_but_never_what_a_live_run_needs(backend: Backend) -> None:
    b = backend
    entries = [put_cache(b, NOW - (10 - i) * DAY) for i in range(10)]  # oldest first
    make_run(b, "running", NOW - 3 * DAY - dt.timedelta(hours=2))  # protects those used in the last 3 days
    dry = b.gc(dry_run=True, retention_cache_days=0, retention_cache_max_entries=4)
    report = b.gc(retention_cache_days=0, retention_cache_max_entries=4)
    assert dry.removed["cache"] == report.removed["cache"] == 6
    assert [cached(b, k) for k in entries] == [False] * 6 + [True] * 4
    # With the cap at 2, the live run's 3 entries stay all the same.
    assert b.gc(retention_cache_days=0, retention_cache_max_entries=2).removed["cache"] == 1
    assert [cached(b, k) for k in entries[6:]] == [False, True, True, True]
    # Age and cap together: the age pass's removals count towards the cap (a dry run agrees).
    more = [put_cache(b, NOW - 100 * DAY), put_cache(b, NOW - 2 * DAY), put_cache(b, NOW - 2 * DAY)]
    settings = dict(retention_cache_days=50, retention_cache_max_entries=5)
    assert b.gc(dry_run=True, **settings).removed["cache"] == b.gc(**settings).removed["cache"] == 1
    assert not cached(b, more[0]) and cached(b, more[1])


def test_nothing_is_removed_when_every_retention_is_off(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    b = backend
    old = make_run(b, "succeeded", NOW - 4000 * DAY, NOW - 4000 * DAY)
    publish_at(b, monkeypatch, old, NOW - 4000 * DAY)
    entry = put_cache(b, NOW - 100 * DAY)
    off = dict(retention_event_days=0, retention_cache_days=0, retention_dead_letter_days=0, retention_audit_days=0)
    assert sum(b.gc(**off).removed.values()) == 0
    assert len(event_types(b, old)) == 2 and cached(b, entry)


# Redis only: the cluster-wide stream, and streams of runs this store does not know -----------------
@pytest.fixture
def redis_backend(redis_url: str, tmp_path: Path) -> Iterator[Backend]:
    prefix = f"augment-test:{uuid.uuid4().hex}"
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", redis_url=redis_url,
                        storage_root=str(tmp_path), **RETENTION)
    bus = RedisEventBus(redis_url)
    bus.PREFIX = f"{prefix}:events"  # type: ignore[misc]
    cache = RedisCache(redis_url)
    cache.PREFIX = f"{prefix}:cache:"  # type: ignore[misc]
    yield Backend("redis", settings, open_store(settings), bus, cache)
    for key in bus.client.scan_iter(match=f"{prefix}:*", count=1000):
        bus.client.delete(key)


def old_entries(b: Backend, n: int, when: dt.datetime) -> list[str]:
    """n entries in the cluster-wide stream, added `when` (their ids say so)."""
    assert isinstance(b.bus, RedisEventBus)
    ms = int(when.timestamp() * 1000)
    fields = {"run_id": "x", "seq": "1", "type": "run.started", "data": "{}", "at": when.isoformat()}
    return [str(b.bus.client.xadd(b.bus.PREFIX, fields, id=f"{ms}-{i + 1}")) for i in range(n)]


def stream_ids(b: Backend) -> list[str]:
    return [i for i, _ in b.bus.client.xrange(b.bus.PREFIX)]  # type: ignore[union-attr]


def test_the_cluster_stream_is_trimmed_by_age_and_length_but_never_past_what_a_group_has_not_acked(
    redis_backend: Backend,
) -> None:
    b = redis_backend
    assert isinstance(b.bus, RedisEventBus)
    old = old_entries(b, 5, NOW - 100 * DAY)
    seen: list[Event] = []
    assert b.bus.consume("alerts", "w", seen.append, max_events=2) == 2  # handled and acked
    b.bus.client.xreadgroup("alerts", "w", {b.bus.PREFIX: ">"}, count=1)  # the third: handed out, not acked
    run = make_run(b, "running", NOW)
    for _ in range(3):
        b.bus.publish(run, "step.progress", {})
    report = b.gc()
    assert report.removed["stream"] == 2
    assert stream_ids(b)[:3] == old[2:]  # from the unacked one on
    assert any("'alerts'" in note for note in report.held)
    # Acked and read to the end: the old ones go; the new ones stay (not old; no cap).
    b.bus.client.xack(b.bus.PREFIX, "alerts", old[2])
    b.bus.consume("alerts", "w", seen.append, max_events=100, idle_seconds=1.5)
    assert b.gc().removed["stream"] == 3
    assert len(stream_ids(b)) == 3
    # The cap: down to its length, but a group made at the end of the stream has read nothing
    # published after it.
    b.bus.consume("late", "w", seen.append, max_events=1, idle_seconds=0.1, new_group_at_end=True)
    for _ in range(2):
        b.bus.publish(run, "step.progress", {})
    b.bus.consume("alerts", "w", seen.append, max_events=100, idle_seconds=1.5)
    assert b.gc(dry_run=True, retention_stream_maxlen=1).removed["stream"] == 3
    assert b.gc(retention_stream_maxlen=1).removed["stream"] == 3
    assert len(stream_ids(b)) == 2
    assert len(b.bus.read(run)) == 5  # the live run's own stream is untouched


def test_a_stream_of_a_run_this_store_does_not_know_is_left_alone(
    redis_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = redis_backend
    publish_at(b, monkeypatch, "another-stores-run", NOW - 400 * DAY)
    old = make_run(b, "succeeded", NOW - 400 * DAY, NOW - 400 * DAY)
    publish_at(b, monkeypatch, old, NOW - 400 * DAY)
    assert b.gc().removed["events"] == 2
    assert len(b.bus.read("another-stores-run")) == 2
    assert b.bus.read(old) == []
    b.bus.publish(old, "review.accepted", {})  # its counter went with its stream: seq 1 again
    assert [e.seq for e in b.bus.read(old)] == [1]


def test_a_hit_marks_a_database_entry_used_at_most_once_an_hour(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'a.db'}")
    cache = DatabaseCache(store.engine)
    key = cache_key("gc-test", 1)
    cache.put_many({key: 1})

    def used_at() -> Any:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(cache_table.c.used_at)).scalar_one()

    assert used_at() is None  # stored, never used
    cache.get_many([key])
    assert used_at() is None  # stored a moment ago: as good as used
    with store.engine.begin() as conn:
        conn.execute(cache_table.update().values(created_at=utcnow() - 2 * DAY))
    cache.get_many([key])
    first = used_at()
    assert first is not None
    cache.get_many([key])
    assert used_at() == first  # within the hour: no write


def test_an_old_cache_table_gets_its_used_at_column(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("create table inference_cache (key varchar(64) primary key, value json not null,"
                             " created_at datetime not null)"))
        conn.execute(sa.text("insert into inference_cache values ('k', '1', '2020-01-01 00:00:00.000000')"))
    cache = DatabaseCache(engine)
    assert cache.get_many(["k"]) == {"k": 1}
    assert {c["name"] for c in sa.inspect(engine).get_columns("inference_cache")} >= {"used_at"}
