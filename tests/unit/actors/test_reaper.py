"""The reaper, driven in-process (no Ray): runs whose heartbeat stopped are failed on a timer, in
one place; reads leave them as they are; a CLI read without a cluster reaps once."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

import augment_cli.common as common
from actors.reaper import Reaper, reap_interval, store_key
from actors.runs import read_run
from augment_cli.main import main
from augment_core.audit import list_entries, record
from augment_core.settings import Settings
from augment_core.store import MetadataStore, audit_table, open_store, utcnow


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}",
                    heartbeat_seconds=0.05, stale_after_seconds=1)


def silent_run(store: MetadataStore, run_id: str) -> None:
    """A running run whose driver died an hour ago."""
    store.create_run(run_id, "w", 1, "/w.yaml", ["validate", "write"])
    assert store.mark_running(run_id)
    store.update_run(run_id, heartbeat_at=utcnow() - dt.timedelta(hours=1))


def test_the_reaper_fails_a_run_whose_heartbeat_stopped_on_its_own_timer(settings: Settings) -> None:
    store = open_store(settings)
    silent_run(store, "dead")
    store.create_run("alive", "w", 1, "/w.yaml", ["validate", "write"])
    assert store.mark_running("alive")
    reaper = Reaper(settings)  # nobody reads: its timer alone
    try:
        deadline = time.monotonic() + 30
        while store.get_run("dead").status == "running":
            assert time.monotonic() < deadline, "the reaper never failed the run"
            store.update_run("alive", heartbeat_at=utcnow())  # the live run keeps beating
            time.sleep(0.05)
    finally:
        reaper.close()
    dead = store.get_run("dead")
    assert (dead.status, dead.error) == ("failed", "driver lost: no heartbeat for more than 1s")
    assert store.get_run("alive").status == "running"


def test_the_reaper_outlives_an_unreachable_store(tmp_path: Path) -> None:
    gone = Settings(database_url=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}")
    reaper = Reaper(gone)
    reaper.close()
    (tmp_path / "no").write_text("a file where the store's folder should be")
    assert reaper.reap() == []  # said in the log, tried again on the next pass


def test_the_reaper_looks_at_least_once_a_heartbeat_and_four_times_a_stale_window() -> None:
    assert reap_interval(Settings(database_url="sqlite:///:memory:")) == 5
    assert reap_interval(Settings(database_url="sqlite:///:memory:", heartbeat_seconds=3, stale_after_seconds=8)) == 2


def test_the_reapers_name_does_not_show_the_stores_password() -> None:
    key = store_key("postgresql://augment:s3cr3t@db/augment")
    assert "s3cr3t" not in key and len(key) == 16


def test_reading_a_run_does_not_write_it(settings: Settings) -> None:
    store = open_store(settings)
    silent_run(store, "dead")
    before = store.get_run("dead")
    assert read_run(settings, "dead") == before
    assert store.list_runs() == [before]


def test_augment_status_reaps_once_only_without_a_cluster(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in settings.exported().items():
        monkeypatch.setenv(name, value)
    store = open_store(settings)
    silent_run(store, "dead")
    monkeypatch.setattr(common, "cluster_address", lambda _settings: "127.0.0.1:1")  # a cluster: its reaper does it
    assert main(["runs"]) == 0
    capsys.readouterr()
    assert store.get_run("dead").status == "running"
    monkeypatch.setattr(common, "cluster_address", lambda _settings: None)  # none: this command is the only process
    assert main(["status", "dead"]) == 0
    assert "run dead: failed" in capsys.readouterr().out
    assert store.get_run("dead").error == "driver lost: no heartbeat for more than 1s"


def test_the_reaper_runs_retention_on_its_own_timer(tmp_path: Path) -> None:
    settings = Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}",
                        redis_url=None, gc_interval_minutes=0.001)
    store = open_store(settings)
    record(store, "tester", "test.old", "x")
    with store.engine.begin() as conn:
        conn.execute(audit_table.update().values(at=utcnow() - dt.timedelta(days=400)))
    reaper = Reaper(settings)
    try:
        deadline = time.monotonic() + 30
        while list_entries(store, action="test.old"):
            assert time.monotonic() < deadline, "the reaper never ran retention"
            time.sleep(0.05)
    finally:
        reaper.close()


def test_a_failing_retention_pass_does_not_stop_the_reaper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import actors.reaper as reaper_module

    def broken(_settings: Settings) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(reaper_module, "collect_garbage", broken)
    reaper = Reaper(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", gc_interval_minutes=0))
    reaper.close()
    assert reaper.collect_garbage() is None  # logged; the next interval tries again
