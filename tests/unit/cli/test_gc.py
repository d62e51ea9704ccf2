"""`augment gc`: what it removed (or, with --dry-run, would remove) per kind, audited; exit 1 when a
kind could not be pruned."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

import augment_core.events as events_module
from augment_cli.main import main
from augment_core.audit import list_entries
from augment_core.events import open_bus
from augment_core.settings import Settings
from augment_core.store import open_store, runs_table, utcnow


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}",
                        redis_url=None, cache_backend="database")
    for name, value in settings.exported().items():
        monkeypatch.setenv(name, value)
    return settings


def ended_run(settings: Settings, monkeypatch: pytest.MonkeyPatch, days_ago: int) -> str:
    """A run that succeeded `days_ago` days ago, with two events of that time."""
    store, when = open_store(settings), utcnow() - dt.timedelta(days=days_ago)
    run_id = f"run-{days_ago}"
    store.create_run(run_id, "w", 1, "/w.yaml", ["validate", "write"])
    with store.engine.begin() as conn:
        conn.execute(runs_table.update().where(runs_table.c.id == run_id)
                     .values(status="succeeded", created_at=when, finished_at=when))
    with monkeypatch.context() as m:
        m.setattr(events_module, "_now", when.isoformat)
        open_bus(settings).publish(run_id, "run.started", {})
        open_bus(settings).publish(run_id, "run.finished", {"status": "succeeded"})
    return run_id


def test_gc_dry_run_counts_then_gc_removes_and_is_audited(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, recent = ended_run(settings, monkeypatch, 400), ended_run(settings, monkeypatch, 2)
    bus = open_bus(settings)
    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["would remove (dry run):", f"  {'events of ended runs':<30} {2:>9}"]
    assert len(bus.read(old)) == 2
    assert list_entries(open_store(settings), action="gc") == []  # a dry run changes nothing

    assert main(["gc"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "removed:"
    assert "result-cache entries" in out and "audit entries" in out
    assert bus.read(old) == [] and len(bus.read(recent)) == 2
    [entry] = list_entries(open_store(settings), action="gc")
    assert (entry.target, entry.outcome) == ("retention", "ok")
    assert entry.detail is not None and "events 2" in entry.detail

    assert main(["gc", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False and report["removed"]["events"] == 0 and report["errors"] == {}


def test_gc_follows_the_retention_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = ended_run(settings, monkeypatch, 400)
    monkeypatch.setenv("AUGMENT_RETENTION_EVENT_DAYS", "0")  # kept for ever
    assert main(["gc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"]["events"] == 0
    assert len(open_bus(settings).read(old)) == 2


def test_gc_exits_1_naming_the_kind_it_could_not_prune(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    open_store(settings)
    monkeypatch.setenv("AUGMENT_CACHE_BACKEND", "redis")
    monkeypatch.setenv("AUGMENT_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert main(["gc"]) == 1
    out = capsys.readouterr().out
    assert "(failed: ConnectionError" in out
    with open_store(settings).engine.connect() as conn:
        assert conn.execute(sa.text("select outcome from audit_log where action = 'gc'")).scalar() == "failed"
