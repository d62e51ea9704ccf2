"""The API's online augment call on a workflow with an llm step, against the local OpenAI double."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from augment_core.settings import Settings
from devtools.fake_openai import FakeOpenAI
from tests.conftest import api_client

INDUSTRIES = ["software", "retail", "finance", "other"]

PROFILE = """\
name: profile
version: 3
providers:
  fake:
    kind: openai
    base_url: {base_url}
    allow_hosts: [127.0.0.1]
    model: fake-small
    max_retries: 1
    timeout_seconds: 10
    prices: {{input_per_million: 1.0, output_per_million: 2.0}}
source: {{kind: csv, path: in.csv}}
schema:
  key: id
  fields:
    id: {{type: string, required: true}}
    name: {{type: string, required: true}}
    employees: {{type: integer}}
steps:
  - use: llm
    name: prof
    params:
      provider: fake
      system: You classify companies.
      user: "Company: {{{{name}}}} ({{{{employees}}}} people)"
      outputs:
        industry: {{enum: [software, retail, finance, other]}}
        b2b: {{type: boolean}}
        headcount: {{type: integer}}
sink: {{dataset: profiles}}
"""

BROKEN = """\
name: broken
source: {kind: csv, path: in.csv}
schema:
  fields:
    name: {type: string}
steps:
  - use: llm
    params:
      provider: no_such_provider
      user: "{{name}}"
      outputs: {industry: {}}
sink: {dataset: broken}
"""


FAKE_PROVIDER = {"retry_after_s": 0.1}  # the `fake` server of tests/conftest.py


@pytest.fixture
def client(fake: FakeOpenAI, tmp_path: Path) -> Iterator[TestClient]:
    fake.reset()
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "profile.yaml").write_text(PROFILE.format(base_url=fake.base_url), encoding="utf-8")
    (folder / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    settings = Settings(storage_root=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        workflows_dir=str(folder))
    with api_client(settings, max_body_bytes=1024 * 1024) as test_client:
        yield test_client


def augment(client: TestClient, name: str, records: list[object]):  # noqa: ANN201
    return client.post(f"/v1/workflows/{name}/augment", json={"records": records})


def test_records_come_back_with_the_llm_outputs_status_and_provenance(client: TestClient, fake: FakeOpenAI) -> None:
    response = augment(client, "profile", [{"id": "1", "name": "Acme", "employees": "120"},
                                           {"id": "2", "name": "Globex"}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow"] == "profile" and body["version"] == 3
    assert body["counts"] == {"in": 2, "valid": 2, "quarantined": 0}
    assert body["invalid"] == []
    assert [r["id"] for r in body["records"]] == ["1", "2"]
    for record in body["records"]:
        assert record["prof_status"] == "ok" and record["prof_error"] is None
        assert record["industry"] in INDUSTRIES
        assert isinstance(record["b2b"], bool) and isinstance(record["headcount"], int)
        trail = json.loads(record["prof_provenance"])
        assert trail["augmenter"] == "llm" and trail["step"] == "prof" and trail["provider"] == "fake"
        assert trail["model"] == "fake-small" and trail["attempts"] == 1 and trail["cache_hit"] is False
        assert trail["tokens_in"] > 0 and trail["tokens_out"] > 0 and trail["cost_usd"] > 0
        assert trail["template_hash"] and trail["run_id"] is None
        assert record["record_uuid"]
    assert fake.stats()["requests"] == 2


def test_online_calls_go_ahead_of_batch_runs_in_the_limiter() -> None:
    from pipelines.workflows.loader import parse_spec
    from serve_apps.api_v1.app import online_context

    spec = parse_spec({"name": "tiny", "source": {"kind": "csv", "path": "x.csv"},
                       "schema": {"fields": {"id": {}}}, "steps": [], "sink": {"dataset": "tiny"}})
    assert online_context(Settings())(spec).interactive is True


def test_a_second_request_is_served_from_the_cache(client: TestClient, fake: FakeOpenAI) -> None:
    records = [{"id": "1", "name": "Acme", "employees": 120}]
    first = augment(client, "profile", records).json()["records"][0]
    again = augment(client, "profile", records).json()["records"][0]
    assert fake.stats()["requests"] == 1
    assert {k: again[k] for k in ("industry", "b2b", "headcount")} == {
        k: first[k] for k in ("industry", "b2b", "headcount")
    }
    assert json.loads(again["prof_provenance"])["cache_hit"] is True


def test_a_record_the_provider_rejects_is_an_error_and_nothing_is_dropped(client: TestClient, fake: FakeOpenAI) -> None:
    response = augment(client, "profile", [{"id": "1", "name": "Acme"}, {"id": "2", "name": "Bad #400"},
                                           {"id": "3", "name": "Initech"}])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counts"] == {"in": 3, "valid": 3, "quarantined": 0}
    records = body["records"]
    assert [r["id"] for r in records] == ["1", "2", "3"]
    assert [r["prof_status"] for r in records] == ["ok", "error", "ok"]
    failed = records[1]
    assert failed["prof_error"] == "HTTP 400: bad request: marker #400"
    assert failed["industry"] is None and failed["b2b"] is None and failed["headcount"] is None
    trail = json.loads(failed["prof_provenance"])
    assert trail["attempts"] == 1 and trail["cost_usd"] == 0 and trail["provider"] == "fake"


def test_a_reply_breaking_the_schema_is_asked_again(client: TestClient) -> None:
    [record] = augment(client, "profile", [{"id": "1", "name": "Sloppy #badschemax1"}]).json()["records"]
    assert record["prof_status"] == "ok" and record["industry"] in INDUSTRIES
    assert json.loads(record["prof_provenance"])["attempts"] == 2


def test_an_invalid_record_comes_back_in_invalid_and_is_not_sent(client: TestClient, fake: FakeOpenAI) -> None:
    body = augment(
        client, "profile", [{"id": "1", "name": "Acme", "employees": "many"}, {"id": "2", "name": "Globex"}]
    ).json()
    assert body["counts"] == {"in": 2, "valid": 1, "quarantined": 1}
    assert body["invalid"][0]["index"] == 0 and body["invalid"][0]["errors"][0]["field"] == "employees"
    assert [r["id"] for r in body["records"]] == ["2"]
    assert fake.stats()["requests"] == 1


def test_a_workflow_naming_an_unknown_provider_is_listed_broken_and_refused(
        client: TestClient, fake: FakeOpenAI) -> None:
    listed = client.get("/v1/workflows")
    assert listed.status_code == 200, listed.text
    by_name = {w["name"]: w for w in listed.json()}
    assert by_name["profile"]["usable"] is True and by_name["profile"]["errors"] == []
    broken = by_name["broken"]
    assert broken["usable"] is False and broken["file"] == "broken.yaml"
    assert any(
        e.startswith("steps[0].params.provider: unknown provider 'no_such_provider'") for e in broken["errors"]
    ), broken
    response = augment(client, "broken", [{"name": "Acme"}])
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "unknown provider 'no_such_provider'" in detail["message"]
    assert detail["errors"] == broken["errors"]
    assert fake.stats()["requests"] == 0


def test_an_unknown_workflow_is_404(client: TestClient) -> None:
    response = augment(client, "nope", [{"name": "Acme"}])
    assert response.status_code == 404 and "nope" in response.json()["detail"]
