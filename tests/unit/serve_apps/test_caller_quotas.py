"""Per-caller quotas through the API in-process: each key's daily provider spend on online calls
and review reruns, quotas that fail closed when their store cannot answer, and event streams
counted closed however the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.reviews import insert_items, list_items
from augment_core.settings import Settings
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from serve_apps.api_v1.app import create_app
from serve_apps.gateway.gate import Gate, QuotaUnavailable
from serve_apps.gateway.spend import CurrentCallerBudget
from serve_apps.shell import ShellArgs, create_shell_app
from tests.unit.serve_apps.test_api_inference import PROFILE

FAKE_PROVIDER = {"retry_after_s": 0.1}  # the `fake` server of tests/conftest.py
ORIGIN = "http://127.0.0.1"
PLAIN = """\
name: plain
source: {kind: csv, path: in.csv}
schema:
  fields:
    id: {type: string, required: true}
sink: {dataset: plain}
"""
RECORD = {"id": "1", "name": "Acme", "employees": 120}


@pytest.fixture
def settings(fake: FakeOpenAI, tmp_path: Path) -> Settings:
    fake.reset()
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "profile.yaml").write_text(PROFILE.format(base_url=fake.base_url), encoding="utf-8")
    (folder / "plain.yaml").write_text(PLAIN, encoding="utf-8")
    return Settings(storage_root=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                    workflows_dir=str(folder), cache_backend="off", api_daily_spend_usd=1.0)


def operator_key(settings: Settings, daily_spend_usd: float | None) -> tuple[str, str]:
    """(what the key counts against, its secret) for a new operator: the key when it has a cap of
    its own, else its user (augment_core.identity.Principal.quota_id)."""
    identity = Identity(open_store(settings))
    user = identity.create_user(f"op-{uuid.uuid4().hex[:8]}", Role.operator, None)
    key, secret = identity.create_key(user.name, "tests", daily_spend_usd=daily_spend_usd)
    return (f"key:{key.prefix}" if daily_spend_usd is not None else f"user:{user.name}"), secret


def client_of(app: FastAPI, secret: str) -> TestClient:
    return TestClient(app, base_url=ORIGIN, headers={"Authorization": f"Bearer {secret}"})


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def test_online_calls_spend_from_the_callers_daily_ledger(settings: Settings, fake: FakeOpenAI) -> None:
    app = create_app(settings, 1 << 20)
    who, secret = operator_key(settings, daily_spend_usd=None)  # the gateway's default cap
    body = client_of(app, secret).post("/v1/workflows/profile/augment", json={"records": [RECORD]}).json()
    assert body["records"][0]["prof_status"] == "ok"
    spend = body["spend"]
    assert spend["cap_usd"] == 1.0 and spend["cap_reached"] is False and spend["request_usd"] > 0
    assert spend["request_usd"] == pytest.approx(json.loads(body["records"][0]["prof_provenance"])["cost_usd"])
    assert app.state.gate.quotas().spent(who, today()) == pytest.approx(spend["request_usd"])


def test_more_keys_of_a_user_get_no_more_spend_or_rate(settings: Settings, fake: FakeOpenAI) -> None:
    app = create_app(settings, 1 << 20)
    who, secret = operator_key(settings, daily_spend_usd=None)
    user = who.removeprefix("user:")
    identity = Identity(open_store(settings))
    second = identity.create_key(user, "another")[1]
    spent = [client_of(app, key).post("/v1/workflows/profile/augment", json={"records": [RECORD]}).json()
             ["spend"]["request_usd"] for key in (secret, second)]
    ledger = app.state.gate.quotas()
    assert ledger.spent(who, today()) == pytest.approx(sum(spent)) and sum(spent) > 0  # one ledger for both keys
    own_key, own_secret = identity.create_key(user, "capped", daily_spend_usd=0.5)  # an admin's own limit
    own = client_of(app, own_secret).post("/v1/workflows/profile/augment", json={"records": [RECORD]}).json()
    assert ledger.spent(f"key:{own_key.prefix}", today()) == pytest.approx(own["spend"]["request_usd"])
    assert ledger.spent(who, today()) == pytest.approx(sum(spent))


def test_calls_beyond_the_cap_are_skipped_like_a_run_over_budget(settings: Settings, fake: FakeOpenAI) -> None:
    _, secret = operator_key(settings, daily_spend_usd=1e-12)  # less than any call
    response = client_of(create_app(settings, 1 << 20), secret).post(
        "/v1/workflows/profile/augment", json={"records": [RECORD, {"id": "2", "name": "Globex"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["prof_status"], r["prof_error"]) for r in body["records"]] == [("skipped", "skipped: budget")] * 2
    assert body["spend"] == {"request_usd": 0.0, "cap_usd": 1e-12, "cap_reached": True}
    assert fake.stats()["requests"] == 0


def test_a_caller_whose_cap_is_used_up_is_refused_until_midnight_utc(settings: Settings, fake: FakeOpenAI) -> None:
    _, secret = operator_key(settings, daily_spend_usd=0)
    client = client_of(create_app(settings, 1 << 20), secret)
    refused = client.post("/v1/workflows/profile/augment", json={"records": [RECORD]})
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert body["spent_usd"] == 0 and body["cap_usd"] == 0 and body["resets_at"].endswith("T00:00:00Z")
    assert "daily provider spend cap of 0 USD" in body["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 86400
    # A workflow that calls no provider costs nothing: it is not refused.
    assert client.post("/v1/workflows/plain/augment", json={"records": [{"id": "1"}]}).status_code == 200
    # A review rerun calls providers like an online augment: refused before anything, and audited.
    assert client.post("/v1/reviews/1/rerun").status_code == 404  # no such item: said first
    insert_items(open_store(settings), "r1", "profile", [{"dataset": "profile", "version": 1, "record_uuid": "u",
                                                          "field": "industry", "step": "prof", "reason": "all",
                                                          "after": "software"}])
    [item], _ = list_items(open_store(settings), workflow="profile")
    rerun = client.post(f"/v1/reviews/{item.id}/rerun")
    assert rerun.status_code == 429, rerun.text
    [entry] = list_entries(open_store(settings), action="review.rerun")
    assert entry.outcome == "refused" and "spend cap" in (entry.detail or "")
    assert fake.stats()["requests"] == 0


def test_every_replica_spends_from_one_ledger(settings: Settings, redis_url: str, fake: FakeOpenAI) -> None:
    shared = settings.model_copy(update={"redis_url": redis_url})
    first, second = create_app(shared, 1 << 20), create_app(shared, 1 << 20)
    who, secret = operator_key(settings, daily_spend_usd=1.0)
    spent = client_of(first, secret).post("/v1/workflows/profile/augment", json={"records": [RECORD]}).json()
    assert spent["spend"]["request_usd"] > 0
    assert second.state.gate.quotas().spent(who, today()) == pytest.approx(spent["spend"]["request_usd"])


def test_outside_a_request_the_online_budget_sends_no_call() -> None:
    assert asyncio.run(CurrentCallerBudget().reserve(0.01)) is False


@pytest.fixture
def unreachable(tmp_path: Path) -> Settings:
    # Nothing listens on port 9 of loopback: every quota call fails at once.
    return Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                    redis_url="redis://127.0.0.1:9/0", auth_cache_seconds=0)


def test_quotas_that_cannot_answer_refuse_requests_with_503(unreachable: Settings) -> None:
    _, secret = operator_key(unreachable, daily_spend_usd=None)
    answer = client_of(create_app(unreachable, 1 << 20), secret).get("/v1/me")
    assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1
    assert "quota store does not answer" in answer.json()["detail"]
    assert "127.0.0.1:9" not in answer.text and "Error" not in answer.text  # no host, no driver words
    gate = Gate(unreachable)
    with pytest.raises(QuotaUnavailable):
        gate.open_stream("key:x", 8)
    assert gate.reserve_spend("key:x", today(), 0.01, 1.0) is False  # no call unaccounted
    Identity(open_store(unreachable)).create_user("ana", Role.viewer, "a long password")
    shell = TestClient(create_shell_app(ShellArgs(), unreachable), base_url=ORIGIN, follow_redirects=False)
    login = shell.post("/login", data={"username": "ana", "password": "a long password"}, headers={"origin": ORIGIN})
    assert login.status_code == 503 and "set-cookie" not in login.headers  # attempts not counted: not let in


def _events_scope(secret: str, spec_version: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/v1/runs/run-1/events", "raw_path": b"/v1/runs/run-1/events",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
            "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {secret}".encode())]}


@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
def test_a_stream_whose_client_left_before_the_first_event_is_counted_closed(
        tmp_path: Path, spec_version: str) -> None:
    settings = Settings(workflows_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        storage_root=str(tmp_path / "data"))
    open_store(settings).create_run("run-1", "w", 1, str(tmp_path / "w.yaml"), ["a"])
    who, secret = operator_key(settings, daily_spend_usd=None)
    app = create_app(settings, 1 << 20)
    sent: list[MutableMapping[str, Any]] = []

    async def gone() -> dict[str, Any]:  # ASGI < 2.4: the server says the client went away
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if spec_version == "2.4":  # ASGI 2.4: sending to a client that went away fails
            raise OSError("client gone")
        sent.append(message)

    with contextlib.suppress(Exception):
        asyncio.run(app(_events_scope(secret, spec_version), gone, send))
    assert not any(m.get("type") == "http.response.body" and m.get("body") for m in sent)  # no event went out
    assert app.state.gate.quotas().streams.get(who, 0) == 0
