"""A real run's events: run.started, step.progress, record.failed for the record the provider
refused, run.finished with counts that match the run row; and a run whose Redis goes down
mid-run still succeeds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from actors.runs import start_run
from augment_cli.main import main
from augment_core.events import open_bus
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.workflows.loader import load_spec
from tests.integration.conftest import company_llm_spec
from tests.integration.private_services import PrivateRedis

RUN_TIMEOUT_S = 300


def spec_with_a_refused_record(folder: Path, base_url: str, records: int, refused: int, rpm: int | None = None) -> Path:
    """An llm step over `records` companies; the fake provider answers 400 to record `refused`."""
    return company_llm_spec(folder, base_url, records, "events", limits={"requests_per_minute": rpm} if rpm else None,
                            name_suffix={refused: " #400"}, extra_rows=[["", "no id: quarantined"]])


def test_a_run_emits_started_progress_failed_records_and_finished(
        ray_cluster, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAI() as fake:
        spec_path = spec_with_a_refused_record(tmp_path, fake.base_url, records=6, refused=3)
        run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
        assert ray.get(final, timeout=RUN_TIMEOUT_S) == "succeeded"
    run = open_store(settings).get_run(run_id)
    events = open_bus(settings).read(run_id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # gap-free from 1
    assert events[0].type == "run.started" and events[0].data["workflow"] == run.workflow
    assert events[-1].type == "run.finished"
    assert events[-1].data == {"status": "succeeded", "counts": run.counts, "error": None}
    counts = events[-1].data["counts"]
    assert counts["in"] == 7 == counts["valid"] + counts["quarantined"] and counts["quarantined"] == 1
    assert counts["failed"] == 1 and counts["augmented"] == 5

    progress = [e.data["steps"] for e in events if e.type == "step.progress"]
    assert progress, "no step.progress event"
    assert progress[-1]["profile"] == {"state": "succeeded", "rows": 6}
    assert progress[-1]["validate"] == {"state": "succeeded", "rows": 7}

    output = pq.read_table(StoragePaths(settings).filesystem(run.output["path"])[1],
                           filesystem=StoragePaths(settings).filesystem(run.output["path"])[0]).to_pylist()
    refused = next(r for r in output if r["id"] == "r3")
    assert refused["profile_status"] == "error"
    failed = [e.data for e in events if e.type == "record.failed"]
    assert failed == [{"record_uuid": refused["record_uuid"], "step": "profile", "reason": refused["profile_error"]}]
    assert "400" in failed[0]["reason"]

    # The same events from the CLI; --follow of a finished run returns at once.
    assert main(["events", run_id[:17], "--follow", "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["seq"] for p in printed] == [e.seq for e in events]


def test_a_run_succeeds_when_redis_goes_down_under_its_events(
        ray_cluster, settings: Settings, tmp_path: Path) -> None:
    redis_server = PrivateRedis()
    try:
        redis_server.start()
        with_redis = settings.model_copy(update={"redis_url": redis_server.url})
        with FakeOpenAI() as fake:
            # One call a second: the run is still calling the provider when Redis stops.
            spec_path = spec_with_a_refused_record(tmp_path, fake.base_url, records=12, refused=2, rpm=60)
            run_id, (_, final) = start_run(with_redis, load_spec(spec_path), str(spec_path))
            started = open_bus(with_redis).read(run_id, block_seconds=RUN_TIMEOUT_S)
            assert started and started[0].type == "run.started"
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while fake.stats()["requests"] < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            redis_server.stop()
            assert open_store(settings).get_run(run_id).status == "running", "the run ended before Redis stopped"
            assert ray.get(final, timeout=RUN_TIMEOUT_S) == "succeeded"
    finally:
        redis_server.close()
    run = open_store(settings).get_run(run_id)
    assert run.status == "succeeded" and run.error is None
    assert run.counts["in"] == 13 and run.counts["failed"] == 1 and run.counts["augmented"] == 11


def test_a_cancelled_run_ends_its_events_with_run_finished_cancelled(
        ray_cluster, settings: Settings, tmp_path: Path) -> None:
    from actors.runs import cancel_run

    with FakeOpenAI() as fake:
        spec_path = spec_with_a_refused_record(tmp_path, fake.base_url, records=40, refused=0, rpm=60)
        run_id, (_, final) = start_run(settings, load_spec(spec_path), str(spec_path))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while fake.stats()["requests"] < 2 and time.monotonic() < deadline:  # calling the provider now
            time.sleep(0.2)
        assert cancel_run(settings, run_id).status == "cancelled"
    events = open_bus(settings).read(run_id)
    finished = [e for e in events if e.type == "run.finished"]
    assert len(finished) == 1 and finished[0] == events[-1]
    assert finished[0].data["status"] == "cancelled" and finished[0].data["error"] == "cancelled by user"
    assert finished[0].data["counts"]["in"] == 41
    assert events[0].type == "run.started"
