"""The metadata store on SQLite and PostgreSQL: runs, their final states, and dataset versions.

The PostgreSQL database is shared by the whole session, so every test uses its own run ids,
workflow and dataset names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from augment_core.settings import Settings
from augment_core.store import (
    COUNT_NAMES,
    MetadataStore,
    StepState,
    VersionTaken,
    engine_url,
    open_store,
    utcnow,
)

HOURS_AGO = dt.timedelta(hours=2)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'augment.db'}"  # the folder is created
    else:
        url = request.getfixturevalue("postgres_url")
    store = MetadataStore(url)
    yield store
    store.engine.dispose()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


def new_run(store: MetadataStore, run_id: str, workflow: str, steps: list[str] | None = None):
    return store.create_run(run_id, workflow, 3, "/specs/wf.yaml", steps if steps is not None else ["a", "b"])


# runs ------------------------------------------------------------------------------------------------
def test_create_and_get_run(store: MetadataStore, uid: str) -> None:
    before = utcnow()
    created = new_run(store, f"{uid}-1", f"wf_{uid}", ["normalize_url_0", "text_stats_1"])
    assert created == store.get_run(f"{uid}-1")
    assert created.id == f"{uid}-1"
    assert (created.workflow, created.workflow_version, created.spec_path) == (f"wf_{uid}", 3, "/specs/wf.yaml")
    assert created.status == "pending"
    assert [(s.name, s.state, s.rows) for s in created.steps] == [
        ("normalize_url_0", "pending", 0), ("text_stats_1", "pending", 0)
    ]
    assert created.counts == {name: 0 for name in COUNT_NAMES}
    assert created.error is None and created.output == {}
    assert created.created_at.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= created.created_at <= utcnow() + dt.timedelta(seconds=1)
    assert created.started_at is None and created.finished_at is None and created.heartbeat_at is None
    assert created.duration_seconds is None


def test_unknown_run_is_a_key_error(store: MetadataStore, uid: str) -> None:
    with pytest.raises(KeyError, match=f"no run '{uid}-missing'"):
        store.get_run(f"{uid}-missing")
    with pytest.raises(KeyError, match=f"no run '{uid}-missing'"):
        store.find_run(f"{uid}-missing")
    with pytest.raises(KeyError, match=f"no run '{uid}-missing'"):
        store.update_run(f"{uid}-missing", status="running")


def test_find_run_by_unambiguous_prefix(store: MetadataStore, uid: str) -> None:
    new_run(store, f"{uid}-aa1", f"wf_{uid}")
    new_run(store, f"{uid}-aa2", f"wf_{uid}")
    new_run(store, f"{uid}-b_3", f"wf_{uid}")
    assert store.find_run(f"{uid}-aa1").id == f"{uid}-aa1"
    assert store.find_run(f"{uid}-b").id == f"{uid}-b_3"
    with pytest.raises(KeyError, match=f"run id prefix '{uid}-aa' is ambiguous"):
        store.find_run(f"{uid}-aa")
    with pytest.raises(KeyError, match="ambiguous"):
        store.find_run(uid)
    # LIKE wildcards in the prefix are plain characters.
    with pytest.raises(KeyError, match="no run"):
        store.find_run(f"{uid}-%")
    with pytest.raises(KeyError, match="no run"):
        store.find_run(f"{uid}-_a")


def test_list_runs_newest_first_with_limit_and_workflow_filter(store: MetadataStore, uid: str) -> None:
    wf, other = f"wf_{uid}", f"other_{uid}"
    for i in range(4):
        new_run(store, f"{uid}-{i}", wf)
    new_run(store, f"{uid}-x", other)
    assert [r.id for r in store.list_runs(workflow=wf)] == [f"{uid}-3", f"{uid}-2", f"{uid}-1", f"{uid}-0"]
    assert [r.id for r in store.list_runs(limit=2, workflow=wf)] == [f"{uid}-3", f"{uid}-2"]
    assert [r.id for r in store.list_runs(workflow=other)] == [f"{uid}-x"]
    assert store.list_runs(workflow=f"none_{uid}") == []
    assert len(store.list_runs(limit=3)) == 3  # the limit holds without a filter too


def test_update_run(store: MetadataStore, uid: str) -> None:
    run_id = f"{uid}-1"
    new_run(store, run_id, f"wf_{uid}")
    started = utcnow()
    steps = [StepState(name="a", state="succeeded", rows=10), {"name": "b", "state": "running", "rows": 4}]
    counts = {name: 0 for name in COUNT_NAMES} | {"in": 12, "valid": 10, "quarantined": 2}
    store.update_run(run_id, status="running", started_at=started, heartbeat_at=started, steps=steps, counts=counts)
    run = store.get_run(run_id)
    assert run.status == "running"
    assert run.started_at == started and run.started_at.tzinfo is not None
    assert run.heartbeat_at == started
    assert [(s.name, s.state, s.rows) for s in run.steps] == [("a", "succeeded", 10), ("b", "running", 4)]
    assert run.counts == counts
    assert run.finished_at is None
    assert run.duration_seconds is not None and run.duration_seconds >= 0


def test_finish_run_happens_once(store: MetadataStore, uid: str) -> None:
    run_id = f"{uid}-1"
    new_run(store, run_id, f"wf_{uid}")
    started = utcnow() - dt.timedelta(seconds=5)
    store.update_run(run_id, status="running", started_at=started)
    output = {"dataset": f"ds_{uid}", "version": 1}
    assert store.finish_run(run_id, "succeeded", output=output) is True
    done = store.get_run(run_id)
    assert (done.status, done.error, done.output) == ("succeeded", None, output)
    assert done.finished_at is not None and done.finished_at >= started
    assert done.duration_seconds == pytest.approx((done.finished_at - started).total_seconds(), abs=0.01)

    assert store.finish_run(run_id, "failed", error="too late") is False
    again = store.get_run(run_id)
    assert (again.status, again.error, again.finished_at) == ("succeeded", None, done.finished_at)


def test_mark_running_claims_only_a_pending_run(store: MetadataStore, uid: str) -> None:
    new_run(store, f"{uid}-1", f"wf_{uid}")
    assert store.mark_running(f"{uid}-1") is True
    run = store.get_run(f"{uid}-1")
    assert run.status == "running" and run.started_at is not None and run.heartbeat_at is not None
    assert store.mark_running(f"{uid}-1") is False  # already running

    new_run(store, f"{uid}-2", f"wf_{uid}")
    store.finish_run(f"{uid}-2", "failed", error="driver lost")
    assert store.mark_running(f"{uid}-2") is False  # a reaped run stays failed
    assert (store.get_run(f"{uid}-2").status, store.get_run(f"{uid}-2").error) == ("failed", "driver lost")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_finish_a_pending_run(store: MetadataStore, uid: str, status: str) -> None:
    new_run(store, f"{uid}-1", f"wf_{uid}")
    assert store.finish_run(f"{uid}-1", status, error="stopped by user") is True
    run = store.get_run(f"{uid}-1")
    assert (run.status, run.error) == (status, "stopped by user")
    assert store.finish_run(f"{uid}-1", "succeeded") is False
    assert store.get_run(f"{uid}-1").status == status


def test_finish_unknown_run_returns_false(store: MetadataStore, uid: str) -> None:
    assert store.finish_run(f"{uid}-missing", "failed") is False


def test_finish_run_refuses_a_non_final_status(store: MetadataStore, uid: str) -> None:
    new_run(store, f"{uid}-1", f"wf_{uid}")
    with pytest.raises(AssertionError):
        store.finish_run(f"{uid}-1", "running")
    assert store.get_run(f"{uid}-1").status == "pending"


def test_reap_stale_runs_fails_only_live_runs_without_a_recent_heartbeat(store: MetadataStore, uid: str) -> None:
    wf = f"wf_{uid}"
    old, now = utcnow() - HOURS_AGO, utcnow()
    ids = {name: f"{uid}-{name}" for name in
           ("stale_running", "fresh_running", "stale_pending", "fresh_pending", "old_finished", "old_hb_fresh")}
    for run_id in ids.values():
        new_run(store, run_id, wf)
    store.update_run(ids["stale_running"], status="running", started_at=old, heartbeat_at=old)
    store.update_run(ids["fresh_running"], status="running", started_at=old, heartbeat_at=now)
    store.update_run(ids["stale_pending"], created_at=old)  # never started, never beat
    store.update_run(ids["old_finished"], status="running", started_at=old, heartbeat_at=old)
    store.finish_run(ids["old_finished"], "succeeded")
    # An old creation does not matter once the run beats.
    store.update_run(ids["old_hb_fresh"], created_at=old, status="running", heartbeat_at=now)

    reaped = store.reap_stale_runs(3600)
    assert sorted(set(reaped) & set(ids.values())) == sorted([ids["stale_running"], ids["stale_pending"]])
    for name in ("stale_running", "stale_pending"):
        run = store.get_run(ids[name])
        assert run.status == "failed"
        assert run.error == "driver lost: no heartbeat for more than 3600s"
        assert run.finished_at is not None
    assert store.get_run(ids["fresh_running"]).status == "running"
    assert store.get_run(ids["fresh_pending"]).status == "pending"
    assert store.get_run(ids["old_hb_fresh"]).status == "running"
    finished = store.get_run(ids["old_finished"])
    assert (finished.status, finished.error) == ("succeeded", None)

    assert not set(store.reap_stale_runs(3600)) & set(ids.values())


def test_a_reaped_run_cannot_be_finished_afterwards(store: MetadataStore, uid: str) -> None:
    run_id = f"{uid}-1"
    new_run(store, run_id, f"wf_{uid}")
    store.update_run(run_id, status="running", heartbeat_at=utcnow() - HOURS_AGO)
    assert run_id in store.reap_stale_runs(3600)
    assert store.finish_run(run_id, "succeeded") is False
    assert store.get_run(run_id).status == "failed"


# dataset versions --------------------------------------------------------------------------------------
def test_dataset_versions(store: MetadataStore, uid: str) -> None:
    ds, other = f"ds_{uid}", f"other_{uid}"
    assert store.next_dataset_version(ds) == 1
    assert store.list_dataset_versions(ds) == []
    schema = {"record_uuid": "string", "employees": "int64"}
    v1 = store.add_dataset_version(ds, 1, "/data/ds/v1", schema, 200, f"{uid}-run1")
    assert (v1.dataset, v1.version, v1.path, v1.schema_, v1.row_count, v1.run_id) == (
        ds, 1, "/data/ds/v1", schema, 200, f"{uid}-run1"
    )
    assert store.next_dataset_version(ds) == 2
    assert store.next_dataset_version(other) == 1  # numbering is per dataset

    with pytest.raises(VersionTaken, match=f"{ds} v1 already exists"):
        store.add_dataset_version(ds, 1, "/data/ds/v1-again", schema, 5, f"{uid}-run2")
    assert [v.path for v in store.list_dataset_versions(ds)] == ["/data/ds/v1"]

    store.add_dataset_version(ds, 3, "/data/ds/v3", schema, 300, f"{uid}-run3")
    store.add_dataset_version(ds, 2, "/data/ds/v2", schema, 250, f"{uid}-run2")
    store.add_dataset_version(other, 1, "/data/other/v1", {}, 0, f"{uid}-run4")
    assert store.next_dataset_version(ds) == 4

    listed = store.list_dataset_versions(ds)
    assert [(v.version, v.row_count, v.run_id) for v in listed] == [
        (1, 200, f"{uid}-run1"), (2, 250, f"{uid}-run2"), (3, 300, f"{uid}-run3")
    ]
    assert all(v.schema_ == schema and v.created_at.tzinfo is not None for v in listed)

    everything = [(v.dataset, v.version) for v in store.list_dataset_versions()]
    mine = [item for item in everything if item[0] in (ds, other)]
    assert mine == [(ds, 1), (ds, 2), (ds, 3), (other, 1)]
    assert everything == sorted(everything)


# URLs and the shared store -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/augment", "postgresql+psycopg://u:p@db:5432/augment"),
        ("postgres://u@db/augment", "postgresql+psycopg://u@db/augment"),
        ("postgresql+psycopg://u@db/augment", "postgresql+psycopg://u@db/augment"),
        ("sqlite:////tmp/augment.db", "sqlite:////tmp/augment.db"),
    ],
)
def test_engine_url(url: str, expected: str) -> None:
    assert engine_url(url) == expected


def test_open_store_shares_one_store_per_url(settings: Settings) -> None:
    first = open_store(settings)
    assert open_store(settings) is first
    assert str(first.engine.url) == settings.database_url
