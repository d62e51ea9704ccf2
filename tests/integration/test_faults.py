"""Faults: PostgreSQL and Redis restart while a run is working. The run carries on (or fails with
a clear error), no run stays 'running', counts reconcile, the catalog holds the run's version
once, and readers (`augment status`, reaping) work again once the service is back.

The services restarted here are private ones (tests/integration/private_services.py), never the
shared ones. The provider is the fake OpenAI server with latency, so a run's llm step lasts
seconds; every wait polls with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

from actors.runs import read_run, start_run
from augment_core.cache import DatabaseCache, RedisCache
from augment_core.settings import Settings
from augment_core.store import MetadataStore, RunRecord, open_store, utcnow
from devtools.fake_openai import FakeOpenAI
from pipelines.workflows.loader import load_spec
from tests.conftest import ROOT, service_unavailable
from tests.integration.private_services import (
    PrivatePostgres,
    PrivateRedis,
    ServiceError,
)
from tests.integration.test_inference_runs import (
    INVALID_ROWS,
    llm_step,
    provider,
    rows,
    write_csv,
    write_spec,
)

RECORDS = 60  # at 2 calls in flight and 300-500 ms a call: the llm step lasts about 12 s
WAIT_S = 240


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres()
        server.start()
    except (ServiceError, OSError, KeyError, subprocess.SubprocessError) as exc:
        service_unavailable("a private PostgreSQL (initdb + pg_ctl)", exc)
    yield server
    server.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
    except (ServiceError, OSError) as exc:
        service_unavailable("a private redis-server", exc)
    yield server
    server.close()


FAKE_PROVIDER = {"latency_ms": (300, 500)}  # the `fake` server of tests/conftest.py


def settings_with(settings: Settings, **changes: Any) -> Settings:
    # Beats every second, so that beats fall into every outage.
    return Settings(**{**settings.model_dump(), "heartbeat_seconds": 1.0, **changes})


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def served(fake: FakeOpenAI) -> int:
    return fake.stats()["requests"]


def step_state(coordinator: Any, step: str) -> str:
    steps = ray.get(coordinator.snapshot.remote(), timeout=60)["steps"]
    return next(s["state"] for s in steps if s["name"] == step)


def slow_spec(folder: Path, fake: FakeOpenAI) -> Path:
    name = f"faults_{uuid.uuid4().hex[:8]}"
    data = write_csv(folder / f"{name}.csv", rows(RECORDS, name) + INVALID_ROWS)  # requests no run cached
    providers = {"fake": provider(fake.base_url, f"acct_{name}", limits={"max_in_flight": 2})}
    return write_spec(folder, name, data, providers, [llm_step("profile", "Profile the company.")])


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.exported()}
    return subprocess.run([sys.executable, "-m", "augment_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_events_readable(settings: Settings, run: RunRecord) -> None:
    """`augment events` after the restart: the run's events from run.started to run.finished,
    numbered without gaps (those published during the outage were lost, and took no number)."""
    shown = cli(settings, "events", run.id, "--json")
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.finished", events
    assert events[-1]["data"]["status"] == "succeeded" and events[-1]["data"]["counts"] == run.counts


def assert_consistent(settings: Settings, run: RunRecord) -> None:
    """What a user checks after a fault: the run ended, its counts reconcile with what was
    written, and the catalog holds its version exactly once."""
    store = open_store(settings)
    assert run.status == "succeeded", run.error
    c = run.counts
    assert (c["in"], c["valid"], c["quarantined"]) == (RECORDS + len(INVALID_ROWS), RECORDS, len(INVALID_ROWS))
    assert c["augmented"] + c["failed"] + c["skipped"] == c["valid"]
    output = pq.read_table(run.output["path"])
    assert output.num_rows == c["valid"]
    assert sorted(output["org_id"].to_pylist()) == [f"ORG-{i:03d}" for i in range(RECORDS)]
    assert set(output["profile_status"].to_pylist()) == {"ok"}  # no record failed for the outage
    assert [s.state for s in run.steps] == ["succeeded"] * len(run.steps)
    assert not [r.id for r in store.list_runs(limit=1000) if r.status in ("pending", "running")]
    versions = store.list_dataset_versions(run.output["dataset"])
    mine = [v for v in versions if v.run_id == run.id]
    assert [(v.version, v.path, v.row_count) for v in mine] == [(run.output["version"], run.output["path"], c["valid"])]
    assert len({v.version for v in versions}) == len(versions)


# the cache: an outage is a miss and a warning, never a failed record ---------------------------------
def test_the_database_cache_misses_while_postgres_is_down_and_reconnects(private_postgres, caplog):
    url = private_postgres.url
    cache = DatabaseCache(MetadataStore(url).engine)
    cache.put_many({"k1": {"values": {"a": 1}}})
    private_postgres.stop()
    try:
        caplog.set_level(logging.WARNING, logger="augment_core.cache")
        assert cache.get_many(["k1"]) == {}  # a miss, not an error
        cache.put_many({"k2": {"values": {"a": 2}}})  # a warning, not an error
        # A worker that starts during the outage opens the store on first use.
        late = DatabaseCache(lambda: MetadataStore(url).engine)
        assert late.get_many(["k1"]) == {}
        warnings = [r.getMessage() for r in caplog.records if r.name == "augment_core.cache"]
        assert any("1 lookups are misses" in w for w in warnings), warnings
        assert any("1 results not cached" in w for w in warnings), warnings
        assert all("OperationalError" in w and "SELECT" not in w for w in warnings), warnings
    finally:
        private_postgres.start()
    assert cache.get_many(["k1", "k2"]) == {"k1": {"values": {"a": 1}}}  # the same pool, reconnected
    assert late.get_many(["k1"]) == {"k1": {"values": {"a": 1}}}


def test_the_redis_cache_misses_while_redis_is_down_and_reconnects(private_redis, caplog):
    cache = RedisCache(private_redis.url)
    cache.put_many({"k1": {"values": {"a": 1}}})
    private_redis.stop()
    try:
        caplog.set_level(logging.WARNING, logger="augment_core.cache")
        assert cache.get_many(["k1"]) == {}
        cache.put_many({"k2": {"values": {"a": 2}}})
        warnings = [r.getMessage() for r in caplog.records if r.name == "augment_core.cache"]
        assert any("1 lookups are misses (ConnectionError" in w for w in warnings), warnings
        assert any("1 results not cached (ConnectionError" in w for w in warnings), warnings
    finally:
        private_redis.start()
    assert cache.get_many(["k1", "k2"]) == {"k1": {"values": {"a": 1}}}  # the same client, reconnected


def calls_on_through_an_outage(service, name: str, fake) -> None:
    """Stop the service, see the run's llm step send 6 more requests meanwhile, start it again."""
    service.stop()
    try:
        start = served(fake)
        wait_for(f"requests while {name} is down", lambda: served(fake) >= start + 6)
    finally:
        service.start()


# whole runs ----------------------------------------------------------------------------------------
def test_a_run_carries_on_through_postgres_restarts(ray_cluster, settings, private_postgres, fake, tmp_path):
    """Two restarts of the metadata store: one in the middle of the llm step (heartbeats miss and
    come back), one from there to the end (the result cache, the catalog entry and the final
    state wait for the database)."""
    # A stale window of 90 s: the final writes wait up to 60 s for the database (the durable-write
    # window stays shorter than the stale window, so the reaper never takes the wait for a lost driver).
    pg = settings_with(settings, database_url=private_postgres.url, cache_backend="database", stale_after_seconds=90)
    spec = slow_spec(tmp_path, fake)
    fake.reset()
    run_id, (coordinator, final) = start_run(pg, load_spec(spec), str(spec))

    wait_for("the llm step to send 8 requests", lambda: served(fake) >= 8)
    calls_on_through_an_outage(private_postgres, "PostgreSQL", fake)

    wait_for("the llm step to send half its requests", lambda: served(fake) >= RECORDS // 2)
    private_postgres.stop()
    try:
        wait_for("the llm step to finish", lambda: step_state(coordinator, "profile") != "running")
        assert step_state(coordinator, "profile") == "succeeded"
        # What a reader sees meanwhile: the database is down, said so, not an empty answer.
        down = cli(pg, "status", run_id)
        assert down.returncode == 1, down.stdout
        assert "augment status: OperationalError" in down.stderr and str(private_postgres.port) in down.stderr
        assert ray.get(coordinator.snapshot.remote(), timeout=60)["status"] == "running"  # waiting, not failed
    finally:
        private_postgres.start()

    assert ray.get(final, timeout=WAIT_S) == "succeeded"
    run = read_run(pg, run_id)  # this process's pool lost its connections in the restarts
    assert_consistent(pg, run)
    assert open_store(pg).reap_stale_runs(pg.stale_after_seconds) == []
    shown = cli(pg, "status", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}: succeeded" in shown.stdout
    assert f"in {RECORDS + len(INVALID_ROWS)} · valid {RECORDS} · quarantined {len(INVALID_ROWS)}" in shown.stdout
    assert_events_readable(pg, run)


def test_a_run_carries_on_through_a_redis_restart(ray_cluster, settings, private_redis, fake, tmp_path):
    """Redis holds the result cache and the run's events; it restarts in the middle of the llm
    step: no record fails, the run succeeds, its events read afterwards."""
    cached = settings_with(settings, cache_backend="redis", redis_url=private_redis.url)
    spec = slow_spec(tmp_path, fake)
    fake.reset()
    run_id, (_, final) = start_run(cached, load_spec(spec), str(spec))

    wait_for("the llm step to send 8 requests", lambda: served(fake) >= 8)
    calls_on_through_an_outage(private_redis, "Redis", fake)

    assert ray.get(final, timeout=WAIT_S) == "succeeded"
    run = read_run(cached, run_id)
    assert_consistent(cached, run)
    assert served(fake) == RECORDS  # every record was called once: nothing was retried for the outage
    assert_events_readable(cached, run)


def test_readers_and_reaping_work_after_a_postgres_restart(settings, private_postgres):
    """A run whose driver died before a restart: afterwards the store of this process (its pooled
    connections cut) reaps it, as the reaper does, and `augment status` reads it as failed with the reason."""
    pg = settings_with(settings, database_url=private_postgres.url)
    store = open_store(pg)
    run_id = f"stale-{uuid.uuid4().hex[:8]}"
    store.create_run(run_id, "faults", 1, "spec.yaml", ["validate", "write"])
    assert store.mark_running(run_id)
    # stale by this test's threshold only: the cluster's reaper of this store (left by an earlier
    # test's run) judges by stale_after_seconds and must not take the run first
    threshold = 2.0
    assert pg.stale_after_seconds >= 20  # the restart takes a few seconds of that margin
    store.update_run(run_id, heartbeat_at=utcnow() - dt.timedelta(seconds=threshold + 3))
    private_postgres.stop()
    private_postgres.start()

    assert store.reap_stale_runs(threshold) == [run_id]
    run = store.get_run(run_id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error.startswith("driver lost: no heartbeat")
    shown = cli(pg, "status", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"run {run_id}: failed" in shown.stdout
    assert "driver lost: no heartbeat" in shown.stdout
