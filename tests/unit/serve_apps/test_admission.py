"""Online augment calls beyond a replica's capacity and queue are refused at once (503, Retry-After)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi import HTTPException

from augment_core.settings import Settings
from serve_apps.api_v1.admission import Admission
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
