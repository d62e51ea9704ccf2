"""The run coordinator's bookkeeping, driven in-process (no Ray): a run ends once, as stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from actors.run_coordinator import RunCoordinator
from augment_core.reviews import insert_items, list_items
from augment_core.settings import Settings
from augment_core.store import RunEnded, open_store
from pipelines.workflows.loader import parse_spec

SPEC = {
    "name": "w",
    "source": {"kind": "csv", "path": "/nowhere.csv"},
    "schema": {"fields": {"id": {}}},
    "steps": [{"use": "text_stats", "params": {"column": "id"}}],
    "sink": {"dataset": "out"},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}",
                    heartbeat_seconds=0.01)


def coordinator(settings: Settings, run_id: str, drive: Any) -> Any:
    """The coordinator as plain Python, as the actor runs it."""
    spec = parse_spec(SPEC)
    open_store(settings).create_run(run_id, spec.name, spec.version, "/w.yaml",
                                    spec.run_step_names())
    instance = RunCoordinator(settings, run_id, spec)
    instance._drive = lambda: drive(instance)
    return instance


def test_a_run_reaped_before_it_started_is_not_brought_back(settings: Settings) -> None:
    called = []
    actor = coordinator(settings, "r1", lambda _self: called.append(1) or ("succeeded", {}))
    open_store(settings).finish_run("r1", "failed", error="driver lost: no heartbeat")
    assert actor.execute() == "failed"
    assert called == []
    run = open_store(settings).get_run("r1")
    assert (run.status, run.error, run.started_at) == ("failed", "driver lost: no heartbeat", None)


def test_a_run_ended_by_its_driver_meanwhile_reports_the_stored_status(settings: Settings) -> None:
    def drive(_self: Any) -> tuple[str, dict[str, Any]]:
        open_store(settings).finish_run("r2", "failed", error="driver interrupted (SIGINT)")
        return "succeeded", {}

    assert coordinator(settings, "r2", drive).execute() == "failed"
    assert open_store(settings).get_run("r2").error == "driver interrupted (SIGINT)"


def test_no_heartbeat_lands_after_the_final_steps(settings: Settings) -> None:
    def drive(actor: Any) -> tuple[str, dict[str, Any]]:
        actor._start("validate")
        time.sleep(0.2)  # many beats store 'validate' as running
        for name in actor.steps:
            actor._finish(name)
        return "succeeded", {"counts": {"in": 0}}

    actor = coordinator(settings, "r3", drive)
    assert actor.execute() == "succeeded"
    time.sleep(0.05)
    run = open_store(settings).get_run("r3")
    assert run.status == "succeeded" and {s.state for s in run.steps} == {"succeeded"}
    assert run.heartbeat_at is not None and run.started_at is not None


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_run_reaped_while_it_runs_stops_and_can_catalogue_nothing(settings: Settings) -> None:
    store = open_store(settings)

    def drive(actor: Any) -> tuple[str, dict[str, Any]]:
        store.finish_run("r4", "failed", error="driver lost: no heartbeat for more than 30s")  # as the reaper does
        wait_until(lambda: actor.stopped() is not None, "the heartbeat to find the run ended")
        with pytest.raises(RunEnded):
            store.reserve_run_version("out", "/data/out/run-r4", {}, 1, "r4")
        return "succeeded", {}

    actor = coordinator(settings, "r4", drive)
    assert actor.execute() == "failed"
    assert actor.stopped() == "run failed"  # its workers send no more provider calls
    run = store.get_run("r4")
    assert (run.status, run.error) == ("failed", "driver lost: no heartbeat for more than 30s")
    assert store.list_dataset_versions("out") == [] and store.next_dataset_version("out") == 1


def review_item(run_id: str) -> dict[str, Any]:
    return {"dataset": "out", "version": 1, "record_uuid": "u1", "field": "id", "step": "text_stats_0",
            "reason": "low confidence", "before": None, "after": "x", "provenance": None}


def test_a_runs_version_is_published_by_its_final_write(settings: Settings) -> None:
    store = open_store(settings)

    def drive(actor: Any) -> tuple[str, dict[str, Any]]:
        entry = store.reserve_run_version("out", "/data/out/run-r5", {}, 3, "r5")
        insert_items(store, "r5", "w", [review_item("r5")])
        assert store.list_dataset_versions("out") == []  # not before the run's end
        return "succeeded", {"output": {"dataset": "out", "version": entry.version, "path": entry.path}}

    assert coordinator(settings, "r5", drive).execute() == "succeeded"
    [version] = store.list_dataset_versions("out")
    assert (version.version, version.run_id, version.row_count) == (1, "r5", 3)
    assert list_items(store, run_id="r5")[1] == 1


def test_a_run_cancelled_after_it_wrote_everything_owns_no_version(settings: Settings) -> None:
    store = open_store(settings)

    def drive(actor: Any) -> tuple[str, dict[str, Any]]:
        entry = store.reserve_run_version("out", "/data/out/run-r6", {}, 3, "r6")
        insert_items(store, "r6", "w", [review_item("r6")])
        store.finish_run("r6", "cancelled", error="cancelled by user")  # e.g. `augment cancel`, meanwhile
        return "succeeded", {"output": {"dataset": "out", "version": entry.version, "path": entry.path}}

    assert coordinator(settings, "r6", drive).execute() == "cancelled"
    assert store.list_dataset_versions("out") == []
    assert list_items(store, run_id="r6")[1] == 0  # nobody reviews values no version holds
