"""Online augment calls beyond a replica's capacity and queue are refused at once (503, Retry-After)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from fastapi import HTTPException

from augment_core.settings import Settings
from pipelines.engine.inprocess import AugmentResult, InProcessEngine
from serve_apps.api_v1.admission import Admission
from serve_apps.api_v1.workflows import ON_LOOP_RECORDS
from tests.conftest import api_client

SPEC = """\
name: light
source: {kind: csv, path: x.csv}
schema:
  fields:
    id: {type: string, required: true}
sink: {dataset: light}
"""


def hold(admission: Admission) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """A request admitted and kept running until `release` is set."""
    entered, release = threading.Event(), threading.Event()

    def work() -> None:
        with admission.admit():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    return entered, release, thread


def test_beyond_the_running_and_the_queued_a_request_is_refused_and_later_admitted() -> None:
    admission = Admission(running=1, queued=1)
    entered, release, running = hold(admission)
    assert entered.wait(5)
    queued_started = threading.Event()
    waiting = threading.Thread(target=lambda: (admission.admit().__enter__(), queued_started.set()))
    waiting.start()  # waits for the running one's slot
    assert not queued_started.wait(0.2)
    with pytest.raises(HTTPException) as refused:
        with admission.admit():
            pass
    assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
    release.set()
    running.join(5)
    assert queued_started.wait(5)  # the queued one got the slot


def test_the_augment_route_answers_503_with_retry_after_when_the_replica_is_full(tmp_path: Path) -> None:
    (tmp_path / "light.yaml").write_text(SPEC, encoding="utf-8")
    settings = Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}",
                        api_concurrency=1, api_queue=0)
    client = api_client(settings)
    assert client.post("/v1/workflows/light/augment", json={"records": [{"id": "a"}]}).status_code == 200
    entered, release, running = hold(client.app.state.admission)
    try:
        assert entered.wait(5)
        refused = client.post("/v1/workflows/light/augment", json={"records": [{"id": "a"}]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "at capacity" in refused.json()["detail"]
    finally:
        release.set()
        running.join(5)
    assert client.post("/v1/workflows/light/augment", json={"records": [{"id": "a"}]}).status_code == 200


def test_on_the_loop_the_requests_waiting_there_count_and_those_past_the_limit_are_refused() -> None:
    """Work on the event loop runs one request at a time and never yields: the requests that reached
    the loop meanwhile are counted before it starts, so the count is the loop's queue."""
    admission = Admission(running=1, queued=1)
    worked: list[int] = []

    async def request(i: int) -> int:
        try:
            async with admission.admit_on_loop():
                worked.append(i)
                return 200
        except HTTPException as refused:
            assert refused.headers == {"Retry-After": "1"}
            return refused.status_code

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(request(i) for i in range(3))))

    assert asyncio.run(burst()) == [200, 200, 503]
    assert worked == [0, 1]  # in the order they came
    assert asyncio.run(burst()) == [200, 200, 503]  # the first ones' places were given back


def test_a_small_request_is_worked_on_the_event_loop_and_a_large_one_in_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "light.yaml").write_text(SPEC, encoding="utf-8")
    settings = Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}")
    on_loop: list[bool] = []
    augment = InProcessEngine.augment

    def noting_where(self: InProcessEngine, records: list[object]) -> AugmentResult:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a thread of the pool has no running loop
            on_loop.append(False)
        return augment(self, records)

    monkeypatch.setattr(InProcessEngine, "augment", noting_where)
    client = api_client(settings)
    for n in (1, ON_LOOP_RECORDS, ON_LOOP_RECORDS + 1):
        answer = client.post("/v1/workflows/light/augment", json={"records": [{"id": str(i)} for i in range(n)]})
        assert answer.status_code == 200 and answer.json()["counts"] == {"in": n, "valid": n, "quarantined": 0}
    assert on_loop == [True, True, False]
