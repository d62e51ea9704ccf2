"""The API's FastAPI app in-process: input errors, store outages and JSON encoding of values."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from augment_core.settings import Settings
from serve_apps.api_v1.app import create_app
from tests.conftest import api_client

SPEC = """\
name: typed
source: {kind: csv, path: x.csv}
schema:
  key: id
  fields:
    id: {type: string, required: true}
    day: {type: date}
    at: {type: datetime}
    score: {type: float}
sink: {dataset: typed}
"""


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "typed.yaml").write_text(SPEC, encoding="utf-8")
    settings = Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}")
    return api_client(settings, max_body_bytes=64 * 1024)


def test_dates_and_times_come_back_as_iso_strings(client: TestClient) -> None:
    response = client.post(
        "/v1/workflows/typed/augment",
        json={"records": [{"id": "a", "day": "2024-02-29", "at": "2024-02-29T10:00:00+01:00", "score": "1.5"}]},
    )
    assert response.status_code == 200, response.text
    record = response.json()["records"][0]
    assert record["day"] == "2024-02-29" and record["at"] == "2024-02-29T09:00:00Z" and record["score"] == 1.5


def test_a_body_that_is_not_utf8_is_422_not_400(client: TestClient) -> None:
    response = client.post("/v1/workflows/typed/augment", content=b'{"records": ["\xff"]}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("JSON decode error at character 14: not UTF-8")


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"records": [' + b"[" * 5_000 + b"]" * 5_000 + b"]}", "nested too deeply"),
    (b'{"records": [{"n": ' + b"1" * 5000 + b"}]}", "Exceeds the limit (4300 digits) for integer string conversion"),
])
def test_a_body_beyond_the_json_parsers_limits_is_422_with_a_path(client: TestClient, body: bytes, reason: str) -> None:
    response = client.post("/v1/workflows/typed/augment", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["path"] == "body" and detail["msg"].startswith(f"JSON decode error: {reason}")


def test_an_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/v1/workflows/typed/augment", json={"records": [{"id": "x" * 100_000}]})
    assert response.status_code == 413


def test_an_unreachable_store_is_503_with_the_reason(tmp_path: Path) -> None:
    settings = Settings(workflows_dir=str(tmp_path), database_url="postgresql://nobody@127.0.0.1:9/none")
    client = TestClient(create_app(settings, max_body_bytes=1024 * 1024), base_url="http://127.0.0.1",
                        headers={"Authorization": "Bearer aug_00000000_unknown"})
    health = client.get("/v1/health")
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "store": "unavailable"}  # no driver words, no host names
    runs = client.get("/v1/runs")  # the key cannot even be checked
    assert runs.status_code == 503 and runs.json()["detail"].startswith("metadata store unavailable (OperationalError)")
    assert "127.0.0.1" not in runs.text


def test_a_missing_workflows_folder_is_503_not_an_empty_list(tmp_path: Path) -> None:
    settings = Settings(workflows_dir=str(tmp_path / "missing"), database_url=f"sqlite:///{tmp_path / 'a.db'}")
    client = api_client(settings, max_body_bytes=1024 * 1024)
    response = client.get("/v1/workflows")
    assert response.status_code == 503 and "does not exist" in response.json()["detail"]
    assert str(tmp_path) not in response.text  # the folder's path is in the log, not in the answer
    assert client.get("/v1/health").json() == {"status": "ok", "store": "ok"}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b'{"records": [{"id": "a", "score": 1}, {"id": "\\ud800"}]}', "(record)", "id: not valid Unicode"),
        (b'{"records": [{"id": "a"}, {"id": "b", "at": "0001-01-01T00:00:00+01:00"}]}', "at", "date-time"),
    ],
)
def test_a_record_arrow_cannot_hold_is_invalid_not_a_500(
        client: TestClient, body: bytes, field: str, reason: str) -> None:
    response = client.post("/v1/workflows/typed/augment", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["counts"] == {"in": 2, "valid": 1, "quarantined": 1}
    (invalid,) = data["invalid"]
    assert invalid["index"] == 1 and invalid["errors"][0]["field"] == field
    assert invalid["errors"][0]["reason"].startswith(reason)


def test_cancel_answers_404_for_unknown_runs_and_409_for_ended_or_unreachable_ones(tmp_path: Path) -> None:
    from augment_core.store import open_store

    settings = Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}")
    store = open_store(settings)
    store.create_run("done-1", "w", 1, "w.yaml", ["validate", "write"])
    store.finish_run("done-1", "succeeded")
    store.create_run("live-1", "w", 1, "w.yaml", ["validate", "write"])
    store.mark_running("live-1")
    client = api_client(settings, max_body_bytes=64 * 1024)
    assert client.post("/v1/runs/nope/cancel").status_code == 404
    ended = client.post("/v1/runs/done-1/cancel")
    assert ended.status_code == 409 and ended.json()["detail"] == "run done-1 already ended: succeeded"
    unreachable = client.post("/v1/runs/live-1/cancel")
    # Without Ray in this process, or with a cluster that does not hold the run's coordinator.
    assert unreachable.status_code == 409 and "run live-1 cannot be reached: " in unreachable.json()["detail"]
    assert store.get_run("live-1").status == "running"  # nothing was changed by a refused cancel
