"""The run coordinator's bookkeeping, driven in-process (no Ray): a run ends once, as stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from actors.run_coordinator import RunCoordinator
from augment_core.settings import Settings
from augment_core.store import open_store
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
