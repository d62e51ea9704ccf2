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
import sqlalchemy as sa

from augment_core.reviews import insert_items, list_items
from augment_core.settings import Settings
from augment_core.store import (
    COUNT_NAMES,
    MetadataStore,
    PathCatalogued,
    RunEnded,
    StepState,
    VersionTaken,
    engine_url,
    open_store,
    postgres_connect_args,
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


def running_run(store: MetadataStore, run_id: str, workflow: str) -> None:
    new_run(store, run_id, workflow)
    assert store.mark_running(run_id)


@pytest.mark.parametrize("ended_by", ["reaped", "cancelled"])
def test_an_ended_run_refuses_its_heartbeat_and_updates_and_the_writer_is_told(
    store: MetadataStore, uid: str, ended_by: str
) -> None:
    run_id = f"{uid}-1"
    running_run(store, run_id, f"wf_{uid}")
    if ended_by == "reaped":
        store.update_run(run_id, heartbeat_at=utcnow() - HOURS_AGO)
        assert store.reap_stale_runs(3600) == [run_id]
    else:
        assert store.finish_run(run_id, "cancelled", error="cancelled by user")
    ended = store.get_run(run_id)
    late_steps = [StepState(name="a", state="running").model_dump()]
    with pytest.raises(RunEnded, match=f"run {run_id} already ended \\({ended.status}\\)") as info:
        store.update_run(run_id, heartbeat_at=utcnow(), steps=late_steps)
    assert info.value.status == ended.status
    assert store.get_run(run_id) == ended  # not a field changed
    with pytest.raises(KeyError, match="no run"):
        store.update_run(f"{uid}-missing", heartbeat_at=utcnow())


def test_a_run_beating_again_is_not_reaped(store: MetadataStore, uid: str) -> None:
    run_id = f"{uid}-1"
    running_run(store, run_id, f"wf_{uid}")
    store.update_run(run_id, heartbeat_at=utcnow() - HOURS_AGO)
    store.update_run(run_id, heartbeat_at=utcnow())  # the beat after a database outage
    assert run_id not in store.reap_stale_runs(3600)
    assert store.get_run(run_id).status == "running"


def test_a_reserved_version_is_seen_only_once_its_run_succeeded(store: MetadataStore, uid: str) -> None:
    ds, run_id = f"ds_{uid}", f"{uid}-1"
    running_run(store, run_id, f"wf_{uid}")
    reserved = store.reserve_run_version(ds, f"/data/{ds}/run-1", {"a": "string"}, 10, run_id)
    assert reserved.version == 1
    assert store.list_dataset_versions(ds) == [] and store.catalogued_version(f"/data/{ds}/run-1") is None
    with pytest.raises(KeyError, match=f"no dataset '{ds}'"):
        store.get_dataset_version(ds, 1)
    assert store.next_dataset_version(ds) == 2  # its number is taken
    with pytest.raises(PathCatalogued):  # and its folder, for anybody else
        store.refuse_catalogued(f"/data/{ds}/run-1")
    store.refuse_catalogued(f"/data/{ds}/run-1", run_id=run_id)  # but not for its run

    again = store.reserve_run_version(ds, f"/data/{ds}/run-1", {"a": "string"}, 12, run_id)  # a resume wrote more
    assert again.version == 1 and again.row_count == 12

    assert store.finish_run(run_id, "succeeded", publish=(ds, 1))
    [published] = store.list_dataset_versions(ds)
    assert (published.version, published.row_count, published.run_id) == (1, 12, run_id)
    assert store.catalogued_version(f"/data/{ds}/run-1") == published


@pytest.mark.parametrize("ended_by", ["reaped", "cancelled"])
def test_a_run_that_ended_catalogues_nothing(store: MetadataStore, uid: str, ended_by: str) -> None:
    ds, before, after = f"ds_{uid}", f"{uid}-before", f"{uid}-after"
    running_run(store, before, f"wf_{uid}")
    running_run(store, after, f"wf_{uid}")
    store.reserve_run_version(ds, f"/data/{ds}/run-before", {}, 1, before)  # reserved, then the run ended
    insert_items(store, before, f"wf_{uid}", [{"dataset": ds, "version": 1, "record_uuid": "u", "field": "f",
                                               "step": "s", "reason": "r", "after": "x"}])
    for run_id in (before, after):
        if ended_by == "reaped":
            store.update_run(run_id, heartbeat_at=utcnow() - HOURS_AGO)
            assert run_id in store.reap_stale_runs(3600)
        else:
            store.finish_run(run_id, "cancelled", error="cancelled by user")
    with pytest.raises(RunEnded):
        store.reserve_run_version(ds, f"/data/{ds}/run-after", {}, 1, after)
    assert store.finish_run(before, "succeeded", publish=(ds, 1)) is False
    assert store.list_dataset_versions(ds) == []  # no failed or cancelled run owns a version
    assert list_items(store, run_id=before)[1] == 0  # nor review items of values no version holds
    assert store.get_run(before).status == store.get_run(after).status != "succeeded"


def test_a_folder_reserved_by_a_run_that_ended_is_reserved_anew_by_the_next(store: MetadataStore, uid: str) -> None:
    """A stream's next start writes on into the folder of a consumer reaped before its final write."""
    ds, folder, lost, next_run = f"ds_{uid}", f"/data/ds_{uid}/run-{uid}-lost", f"{uid}-lost", f"{uid}-next"
    running_run(store, lost, f"wf_{uid}")
    store.reserve_run_version(ds, folder, {}, 5, lost)
    store.finish_run(lost, "failed", error="driver lost: no heartbeat for more than 30s")
    running_run(store, next_run, f"wf_{uid}")
    assert store.catalogued_version(folder) is None  # nothing of it was ever published
    entry = store.reserve_run_version(ds, folder, {}, 9, next_run)
    assert (entry.run_id, entry.row_count) == (next_run, 9)
    assert store.finish_run(next_run, "succeeded", publish=(ds, entry.version))
    assert [(v.path, v.run_id) for v in store.list_dataset_versions(ds)] == [(folder, next_run)]


# dataset versions --------------------------------------------------------------------------------------
def test_dataset_versions(store: MetadataStore, uid: str) -> None:
    ds, other = f"ds_{uid}", f"other_{uid}"
    assert store.next_dataset_version(ds) == 1
    assert store.list_dataset_versions(ds) == []
    schema = {"record_uuid": "string", "employees": "int64"}
    v1 = store.add_dataset_version(ds, 1, f"/data/{ds}/v1", schema, 200, f"{uid}-run1")
    assert (v1.dataset, v1.version, v1.path, v1.schema_, v1.row_count, v1.run_id) == (
        ds, 1, f"/data/{ds}/v1", schema, 200, f"{uid}-run1"
    )
    assert store.next_dataset_version(ds) == 2
    assert store.next_dataset_version(other) == 1  # numbering is per dataset

    with pytest.raises(VersionTaken, match=f"{ds} v1 already exists"):
        store.add_dataset_version(ds, 1, f"/data/{ds}/v1-again", schema, 5, f"{uid}-run2")
    assert [v.path for v in store.list_dataset_versions(ds)] == [f"/data/{ds}/v1"]

    store.add_dataset_version(ds, 3, f"/data/{ds}/v3", schema, 300, f"{uid}-run3")
    store.add_dataset_version(ds, 2, f"/data/{ds}/v2", schema, 250, f"{uid}-run2")
    store.add_dataset_version(other, 1, f"/data/{other}/v1", {}, 0, f"{uid}-run4")
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


def test_postgresql_statements_are_bounded_in_time_keeping_the_urls_own_options() -> None:
    args = postgres_connect_args("postgresql+psycopg://u@db/augment?options=-c%20search_path%3Daug", 2.5)
    assert args == {"connect_timeout": 10, "options": "-c search_path=aug -c statement_timeout=2500"}
    assert postgres_connect_args("postgresql+psycopg://u@db/augment")["options"] == "-c statement_timeout=60000"


def test_the_store_on_postgresql_runs_with_a_statement_timeout(postgres_url: str) -> None:
    store = MetadataStore(postgres_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "1min"
    finally:
        store.engine.dispose()


def test_open_store_shares_one_store_per_url(settings: Settings) -> None:
    first = open_store(settings)
    assert open_store(settings) is first
    assert str(first.engine.url) == settings.database_url
