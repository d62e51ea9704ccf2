"""The event bus on each backend (SQLite, PostgreSQL, Redis Streams): order and gap-free sequence
numbers with concurrent publishers, following from another process, consumer groups with dead
letters and re-delivery, publishing while Redis is down, and the SSE endpoint's resume."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import httpx
import pytest
import uvicorn

from augment_core.events import END_GRACE_SECONDS, Event, ended_or_lost_at, follow_run, open_bus
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store, utcnow
from serve_apps.api_v1.app import create_app
from tests.conftest import ROOT, api_key
from tests.integration.private_services import PrivateRedis, free_port

DEADLINE_S = 60


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def bus_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of one backend; the runs themselves live in a SQLite store of the test."""
    sqlite = f"sqlite:///{tmp_path / 'augment.db'}"
    if request.param == "sqlite":
        return Settings(database_url=sqlite, redis_url=None, workflows_dir=str(tmp_path))
    if request.param == "postgres":
        return Settings(
            database_url=request.getfixturevalue("postgres_url"), redis_url=None, workflows_dir=str(tmp_path)
        )
    return Settings(database_url=sqlite, redis_url=request.getfixturevalue("redis_url"), workflows_dir=str(tmp_path))


def new_run(settings: Settings) -> str:
    run_id = f"ev-{uuid.uuid4().hex[:12]}"
    open_store(settings).create_run(run_id, "events_test", 1, "events.yaml", ["validate", "write"])
    return run_id


def wait_for(what: str, check, deadline_s: float = DEADLINE_S):  # noqa: ANN001, ANN201 - test helper
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# publish and read --------------------------------------------------------------------------
def test_events_come_back_in_order_after_any_point(bus_settings: Settings) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    published = [bus.publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": i}}})
                 for i in range(5)]
    assert [e.seq for e in published] == [1, 2, 3, 4, 5]
    events = bus.read(run_id)
    assert events == published
    assert [e.seq for e in bus.read(run_id, after=3)] == [4, 5]
    assert [e.seq for e in bus.read(run_id, after=1, limit=2)] == [2, 3]
    assert bus.read(run_id, after=5) == [] and bus.read(f"{run_id}-other") == []
    assert events[0].data == {"steps": {"validate": {"state": "running", "rows": 0}}} and events[0].run_id == run_id


def test_a_blocked_read_returns_an_event_published_meanwhile(bus_settings: Settings) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    bus.publish(run_id, "run.started", {})
    later = threading.Timer(0.5, lambda: bus.publish(run_id, "run.finished", {"status": "succeeded"}))
    later.start()
    try:
        events = bus.read(run_id, after=1, block_seconds=DEADLINE_S)
    finally:
        later.join()
    assert [(e.seq, e.type) for e in events] == [(2, "run.finished")]


def test_an_unknown_event_type_is_refused_with_the_known_ones(bus_settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown event type 'run.exploded' .*run.started"):
        open_bus(bus_settings).publish("r", "run.exploded", {})


def _publish_many(database_url: str, redis_url: str | None, run_id: str, n: int) -> list[int]:
    bus = open_bus(Settings(database_url=database_url, redis_url=redis_url))
    return [bus.publish(run_id, "record.failed", {"record_uuid": str(i), "step": "s", "reason": "r"}).seq
            for i in range(n)]


def test_concurrent_publishers_in_several_processes_keep_seq_gap_free(bus_settings: Settings) -> None:
    run_id = new_run(bus_settings)
    args = (bus_settings.database_url, bus_settings.redis_url, run_id, 25)
    with ProcessPoolExecutor(max_workers=4, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_publish_many, *args) for _ in range(4)]
        threads = _publish_many(*args)  # and this process at the same time
        returned = sorted(threads + [seq for f in futures for seq in f.result(timeout=300)])
    assert returned == list(range(1, 126))  # every publisher got its own number, none skipped
    stored = open_bus(bus_settings).read(run_id)
    assert [e.seq for e in stored] == list(range(1, 126))


# following from another process -----------------------------------------------------------------
def _cli_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "AUGMENT_DATABASE_URL": settings.database_url, "PYTHONPATH": str(ROOT)}
    env.pop("AUGMENT_REDIS_URL", None)
    if settings.redis_url:
        env["AUGMENT_REDIS_URL"] = settings.redis_url
    return env


def _cli(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """`augment events ARGS` in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "augment_cli.main", "events", *args], env=_cli_env(settings),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "augment_cli.main", "events", *args], env=_cli_env(settings),
                          cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def test_follow_in_another_process_sees_live_events_and_exits_after_run_finished(bus_settings: Settings) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    bus.publish(run_id, "run.started", {"workflow": "events_test", "version": 1})
    follower = _cli(bus_settings, run_id[:10], "--follow", "--json")
    try:
        lines = _lines(follower)
        first = Event.model_validate_json(lines.get(timeout=DEADLINE_S))
        assert (first.seq, first.type) == (1, "run.started")
        bus.publish(run_id, "record.failed", {"record_uuid": "u1", "step": "profile", "reason": "HTTP 400"})
        second = Event.model_validate_json(lines.get(timeout=DEADLINE_S))  # live, while the run goes on
        assert (second.seq, second.data["reason"]) == (2, "HTTP 400")
        open_store(bus_settings).finish_run(run_id, "succeeded")
        bus.publish(run_id, "run.finished", {"status": "succeeded", "counts": {"in": 1}, "error": None})
        assert follower.wait(timeout=DEADLINE_S) == 0
        third = Event.model_validate_json(lines.get(timeout=5))
        assert (third.seq, third.type) == (3, "run.finished")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_follow_of_an_ended_run_prints_every_event_and_exits_at_once(tmp_path: Path) -> None:
    run_settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", redis_url=None)
    bus = open_bus(run_settings)
    run_id = new_run(run_settings)
    for i in range(3):
        bus.publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": i}}})
    store = open_store(run_settings)
    store.finish_run(run_id, "failed", error="driver lost",  # reaped: no run.finished, and a while ago
                     finished_at=utcnow() - dt.timedelta(seconds=END_GRACE_SECONDS))
    done = _cli_run(run_settings, run_id, "--follow")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and "step.progress" in lines[0] and "validate running 2" in lines[2]

    after = _cli_run(run_settings, run_id, "--after", "2", "--json")
    assert [json.loads(line)["seq"] for line in after.stdout.splitlines()] == [3]


def test_follow_of_a_run_whose_driver_died_ends_without_writing_the_run(tmp_path: Path) -> None:
    """No reaper runs (no cluster): the follower takes the silent run for ended, and leaves its row as it is."""
    run_settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", redis_url=None)
    run_id = new_run(run_settings)
    open_bus(run_settings).publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": 1}}})
    store = open_store(run_settings)
    assert store.mark_running(run_id)
    silent_since = utcnow() - dt.timedelta(seconds=run_settings.stale_after_seconds + END_GRACE_SECONDS)
    store.update_run(run_id, heartbeat_at=silent_since)
    before = store.get_run(run_id)
    assert ended_or_lost_at(before, run_settings.stale_after_seconds) is not None
    events = [e for batch in follow_run(run_settings, run_id, follow=True, block_seconds=0.1) for e in batch]
    assert [e.type for e in events] == ["step.progress"]
    assert store.get_run(run_id) == before  # a read: still 'running' until a reaper fails it


def test_a_live_run_is_not_ended_for_its_followers() -> None:
    record = RunRecord(id="r", workflow="w", workflow_version=1, spec_path="s", status="running", steps=[],
                       counts={}, created_at=utcnow(), heartbeat_at=utcnow())
    assert ended_or_lost_at(record, 30) is None


def test_events_of_an_unknown_run_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from augment_cli.main import main

    monkeypatch.setenv("AUGMENT_DATABASE_URL", f"sqlite:///{tmp_path / 'a.db'}")
    monkeypatch.delenv("AUGMENT_REDIS_URL", raising=False)
    assert main(["events", "no-such-run"]) == 1
    assert "augment: no run 'no-such-run'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["events", "x", "--after", "-1"])
    assert exit_.value.code == 2 and "-1 is below 0" in capsys.readouterr().err


# consumer groups ----------------------------------------------------------------------------------
def test_a_poison_event_goes_to_the_dead_letters_and_the_consumer_carries_on(bus_settings: Settings) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    group = f"g-{uuid.uuid4().hex[:8]}"
    for i in range(4):
        bus.publish(run_id, "record.failed", {"record_uuid": f"u{i}", "step": "s", "reason": "r"})
    handled: list[str] = []
    stop = threading.Event()

    def handler(event: Event) -> None:
        if event.run_id != run_id:
            return  # other tests' events share the cluster-wide stream
        if event.data["record_uuid"] == "u1":
            raise ValueError("cannot handle u1")
        handled.append(event.data["record_uuid"])
        if len(handled) == 3:
            stop.set()

    consumer = threading.Thread(target=bus.consume, args=(group, "c1", handler), kwargs={"stop": stop})
    consumer.start()
    consumer.join(timeout=DEADLINE_S)
    stop.set()
    consumer.join()
    assert handled == ["u0", "u2", "u3"]  # the poison message did not stop the consumer
    dead = [d for d in bus.dead_letters(group) if d.event.run_id == run_id]
    assert len(dead) == 1
    assert dead[0].error == "ValueError: cannot handle u1" and dead[0].consumer == "c1"
    assert dead[0].event.seq == 2 and dead[0].event.data["record_uuid"] == "u1"
    # Acked: the group hands out nothing more of this run, to this consumer or another.
    again: list[Event] = []
    bus.consume(group, "c2", lambda e: again.append(e) if e.run_id == run_id else None, idle_seconds=1.5,
                claim_after_seconds=0)
    assert again == []


CONSUMER_SCRIPT = """
import sys, time
from augment_core.events import open_bus
from augment_core.settings import Settings
database_url, redis_url, group, run_id, mark = sys.argv[1:6]
bus = open_bus(Settings(database_url=database_url, redis_url=redis_url or None))
def handler(event):
    if event.run_id == run_id:
        open(mark, "w").write(str(event.seq))
        time.sleep(3600)  # killed here: the event stays unacked
bus.consume(group, "doomed", handler, batch=1)
"""


def test_events_a_dead_consumer_left_unacked_are_redelivered(bus_settings: Settings, tmp_path: Path) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    group = f"g-{uuid.uuid4().hex[:8]}"
    bus.publish(run_id, "run.started", {})
    mark = tmp_path / "taken"
    doomed = subprocess.Popen(
        [sys.executable, "-c", CONSUMER_SCRIPT, bus_settings.database_url, bus_settings.redis_url or "", group,
         run_id, str(mark)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for("the first consumer to take the event", mark.exists)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=DEADLINE_S)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    got: list[Event] = []
    stop = threading.Event()

    def handler(event: Event) -> None:
        if event.run_id == run_id:
            got.append(event)
            stop.set()

    bus.consume(group, "heir", handler, stop=stop, claim_after_seconds=1, idle_seconds=DEADLINE_S)
    assert [(e.seq, e.type) for e in got] == [(1, "run.started")]
    # Acked by the heir: nobody gets it a third time.
    again: list[Event] = []
    bus.consume(group, "third", lambda e: again.append(e) if e.run_id == run_id else None,
                claim_after_seconds=0, idle_seconds=1.5)
    assert again == []


# Redis down ---------------------------------------------------------------------------------------
def test_publishing_while_redis_is_down_logs_a_warning_and_does_not_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    redis_server = PrivateRedis()
    try:
        redis_server.start()
        import redis

        redis.Redis(port=redis_server.port).config_set("requirepass", "s3cret-pw")
        url = f"redis://:s3cret-pw@127.0.0.1:{redis_server.port}/0"
        bus = open_bus(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", redis_url=url))
        assert bus.publish("r1", "run.started", {}).seq == 1
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="augment_core.events"):
            lost = bus.publish("r1", "run.finished", {"status": "succeeded"})
        assert lost.seq == 0 and lost.type == "run.finished"  # returned, not raised: the run goes on
        assert "event run.finished of run r1 lost: event bus unavailable" in caplog.text
        assert "s3cret-pw" not in caplog.text
    finally:
        redis_server.close()


# the SSE endpoint ---------------------------------------------------------------------------------
API_HEADERS: dict[str, str] = {}  # the key of the `api` fixture's caller


@pytest.fixture
def api(bus_settings: Settings) -> Iterator[str]:
    """The API app served by uvicorn on a free port (real streaming, as a browser sees it)."""
    global API_HEADERS
    API_HEADERS = {"Authorization": f"Bearer {api_key(bus_settings, 'viewer')}"}
    server = uvicorn.Server(uvicorn.Config(create_app(bus_settings, max_body_bytes=1 << 20), host="127.0.0.1",
                                          port=free_port(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for("the API to listen", lambda: server.started)
    yield f"http://127.0.0.1:{server.config.port}/v1"
    server.should_exit = True
    thread.join(timeout=DEADLINE_S)


def sse_frames(response: httpx.Response, count: int | None = None) -> list[dict[str, str]]:
    """The frames of a stream (comments left out), up to `count` of them."""
    frames, frame = [], {}
    for line in response.iter_lines():
        if not line:
            if frame:
                frames.append(frame)
                frame = {}
                if count is not None and len(frames) == count:
                    break
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            frame[key] = value
    return frames


def test_sse_streams_live_and_a_reconnect_resumes_exactly_after_the_last_event(
        bus_settings: Settings, api: str) -> None:
    bus = open_bus(bus_settings)
    run_id = new_run(bus_settings)
    for i in range(3):
        bus.publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": i}}})
    with httpx.Client(timeout=DEADLINE_S, headers=API_HEADERS) as client:
        with client.stream("GET", f"{api}/runs/{run_id[:10]}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = sse_frames(response, count=2)  # then the client drops the connection
        assert [(f["id"], f["event"]) for f in first] == [("1", "step.progress"), ("2", "step.progress")]
        assert json.loads(first[1]["data"])["data"]["steps"]["validate"]["rows"] == 1

        threading.Timer(1.0, lambda: (open_store(bus_settings).finish_run(run_id, "succeeded"), bus.publish(
            run_id, "run.finished", {"status": "succeeded", "counts": {}, "error": None}))).start()
        with client.stream("GET", f"{api}/runs/{run_id}/events", headers={"Last-Event-ID": "2"}) as response:
            rest = sse_frames(response)  # ends by itself after run.finished
        assert [(f["id"], f["event"]) for f in rest] == [("3", "step.progress"), ("4", "run.finished")]

        after = client.get(f"{api}/runs/{run_id}/events", params={"after": 3})
        assert [f["id"] for f in sse_frames(after)] == ["4"]
        header_wins = client.get(f"{api}/runs/{run_id}/events", params={"after": 0}, headers={"Last-Event-ID": "3"})
        assert [f["id"] for f in sse_frames(header_wins)] == ["4"]


def test_sse_of_an_unknown_run_is_404_and_a_bad_last_event_id_is_422(bus_settings: Settings, api: str) -> None:
    with httpx.Client(timeout=DEADLINE_S, headers=API_HEADERS) as client:
        missing = client.get(f"{api}/runs/no-such-run/events")
        assert missing.status_code == 404 and missing.json()["detail"] == "no run 'no-such-run'"
        run_id = new_run(bus_settings)
        bad = client.get(f"{api}/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "last-event-id"]
