"""Inference steps, hardened: llm and embed providers behind the connection guard, every attempt
charged and covered by the budget, one Idempotency-Key per call."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import pipelines.inference.client as client
from devtools.fake_openai import FakeOpenAI
from pipelines.engine.chain import StepError
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.budget import LocalBudget
from pipelines.inference.client import Attempt
from pipelines.inference.context import RunContext
from pipelines.workflows.loader import parse_spec

NO_FILE = Path(__file__).parent / "no-such-providers.yaml"
FAKE_PROVIDER = {"retry_after_s": 0.1}  # the `fake` server of tests/conftest.py
DOLLAR_A_TOKEN = {"input_per_million": 1e6, "output_per_million": 1e6}  # cost = tokens, in dollars


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_BASE", 0.001)


def llm_spec(base_url: str, **provider: Any) -> dict[str, Any]:
    return {
        "name": "hardened",
        "providers": {"p": {"kind": "openai", "base_url": base_url, "model": "fake-small", "max_retries": 3,
                            "timeout_seconds": 10, **provider}},
        "source": {"kind": "csv", "path": "in.csv"},
        "schema": {"key": "id", "fields": {"id": {}, "name": {}}},
        "steps": [{"use": "llm", "name": "s", "params": {
            "provider": "p", "user": "About {{name}}", "outputs": {"summary": {}}, "max_tokens": 20,
            "invalid_retries": 0}}],
        "sink": {"dataset": "hardened"},
    }


def embed_spec(base_url: str, **provider: Any) -> dict[str, Any]:
    data = llm_spec(base_url, **provider)
    data["steps"] = [{"use": "embed", "name": "s", "params": {"provider": "p", "column": "name"}}]
    return data


def engine(data: dict[str, Any], budget: LocalBudget | None = None) -> InProcessEngine:
    spec = parse_spec(data, providers_file=NO_FILE)
    return InProcessEngine(spec, RunContext(providers=spec.providers, budget=budget or LocalBudget()))


# --- every provider kind behind the guard --------------------------------------------------------
@pytest.mark.parametrize("spec_of", [llm_spec, embed_spec])
def test_a_provider_written_as_a_private_address_fails_setup(spec_of: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(StepError, match="127.0.0.1 resolves to 127.0.0.1, a loopback address; list 127.0.0.1"
                                        " in the provider's allow_hosts"):
        engine(spec_of("http://127.0.0.1:9/v1"))


@pytest.mark.parametrize("spec_of", [llm_spec, embed_spec])
def test_a_name_resolving_to_loopback_is_each_records_error(fake: FakeOpenAI,
                                                            spec_of: Callable[..., dict[str, Any]]) -> None:
    fake.reset()
    result = engine(spec_of(fake.base_url.replace("127.0.0.1", "localhost"))).augment([{"id": "1", "name": "Acme"}])
    row = result.records[0]
    assert row["s_status"] == "error"
    assert row["s_error"].startswith("refused to connect to localhost at ")
    assert "a loopback address; list localhost in the provider's allow_hosts to call it" in row["s_error"]
    assert json.loads(row["s_provenance"])["attempts"] == 1  # refused once, not retried
    assert fake.stats()["requests"] == 0


def test_allow_hosts_lets_an_llm_provider_reach_loopback(fake: FakeOpenAI) -> None:
    fake.reset()
    result = engine(llm_spec(fake.base_url, allow_hosts=["127.0.0.1"])).augment([{"id": "1", "name": "Acme"}])
    assert result.records[0]["s_status"] == "ok" and fake.stats()["requests"] == 1


# --- one Idempotency-Key per call, on each of its attempts ----------------------------------------
def test_retries_of_one_call_carry_its_key_and_other_calls_others(fake: FakeOpenAI) -> None:
    fake.reset()
    records = [{"id": "1", "name": "Acme #500x2"}, {"id": "2", "name": "Beta"}, {"id": "3", "name": "Gamma #429x1"}]
    result = engine(llm_spec(fake.base_url, allow_hosts=["127.0.0.1"])).augment(records)
    assert [r["s_status"] for r in result.records] == ["ok", "ok", "ok"]
    keys = fake.stats()["idempotency_keys"]
    assert sorted(keys.values()) == [1, 2, 3]  # three calls, three keys: 3, 1 and 2 attempts
    assert all(key.startswith("augment-") for key in keys)


def test_an_invalid_reply_is_asked_again_under_a_new_key(fake: FakeOpenAI) -> None:
    """The same key would have the provider replay the invalid reply it stored for it."""
    fake.reset()
    data = llm_spec(fake.base_url, allow_hosts=["127.0.0.1"])
    data["steps"][0]["params"]["invalid_retries"] = 1
    result = engine(data).augment([{"id": "1", "name": "Acme #badschema"}])
    assert result.records[0]["s_status"] == "ok"
    assert list(fake.stats()["idempotency_keys"].values()) == [1, 1]


def http_spec(base_url: str, method: str, **provider: Any) -> dict[str, Any]:
    data = llm_spec(base_url, **provider)
    data["providers"]["p"] = {"kind": "http", "base_url": base_url, "allow_hosts": ["127.0.0.1"], **provider}
    params: dict[str, Any] = {"provider": "p", "method": method, "path": "/enrich",
                              "outputs": {"industry": {"path": "company.industry"}}}
    params |= {"body": {"domain": "{{name}}"}} if method == "POST" else {"query": {"domain": "{{name}}"}}
    data["steps"] = [{"use": "http", "name": "s", "params": params}]
    return data


@pytest.mark.parametrize(("method", "option", "sent"), [
    ("POST", {}, False),  # a JSON API may refuse a header it does not know: asked for in the providers file
    ("POST", {"idempotency_keys": True}, True),
    ("GET", {"idempotency_keys": True}, False),  # a GET is idempotent already
])
def test_http_providers_send_a_key_when_their_declaration_says_so(
        fake: FakeOpenAI, method: str, option: dict[str, Any], sent: bool) -> None:
    fake.reset()
    result = engine(http_spec(fake.base_url, method, **option)).augment([{"id": "1", "name": "acme.com"}])
    assert result.records[0]["s_status"] == "ok"
    assert len(fake.stats()["idempotency_keys"]) == int(sent)


# --- every attempt charged, every retry reserved -------------------------------------------------
CONTENT = json.dumps({"summary": "fine"})


def usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def scripted(monkeypatch: pytest.MonkeyPatch, *answers: Any) -> list[httpx.Request]:
    """The provider answers each attempt in turn: an httpx.Response, or an exception raised instead."""
    sent: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    mock = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(client, "http_client", lambda allow_hosts=(): mock)
    return sent


def ok(tokens_in: int, tokens_out: int) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": CONTENT}, "finish_reason": "stop"}],
                                     "usage": usage(tokens_in, tokens_out)})


def most_one_attempt_costs(data: dict[str, Any]) -> float:
    """What the step reserves for one attempt (tokens of the prompt + max_tokens, a dollar each)."""
    step = engine(data).chain[0]
    return float(sum(step.estimate(step.build_request({"name": "Acme"}))))  # type: ignore[attr-defined]


def test_every_attempt_that_may_have_been_billed_is_charged(monkeypatch: pytest.MonkeyPatch) -> None:
    data = llm_spec("https://provider.example/v1", prices=DOLLAR_A_TOKEN, max_retries=4)
    most = most_one_attempt_costs(data)
    sent = scripted(
        monkeypatch,
        httpx.Response(500, json={"error": {"message": "overloaded"}, "usage": usage(7, 3)}),  # billed: its usage
        httpx.Response(503, json={"error": {"message": "busy"}}),  # an error reply, nothing billed
        httpx.ConnectError("refused"),  # never sent
        httpx.ReadTimeout("no reply"),  # sent, unanswered: perhaps billed, as much as it could cost
        ok(11, 4),
    )
    budget = LocalBudget()
    row = engine(data, budget).augment([{"id": "1", "name": "Acme"}]).records[0]
    assert row["s_status"] == "ok" and len(sent) == 5
    provenance = json.loads(row["s_provenance"])
    assert provenance["cost_usd"] == pytest.approx(10 + most + 15)
    assert (provenance["tokens_in"], provenance["tokens_out"], provenance["attempts"]) == (18, 7, 5)
    assert budget.ledger.spent == pytest.approx(10 + most + 15)
    assert budget.ledger.reserved == 0  # every attempt's reservation settled
    assert budget.ledger.steps["s"]["calls"] == 5
    assert len({r.headers["idempotency-key"] for r in sent}) == 1  # one call, one key


def test_a_retry_reserves_again_and_stops_when_the_budget_has_no_room(monkeypatch: pytest.MonkeyPatch) -> None:
    data = llm_spec("https://provider.example/v1", prices=DOLLAR_A_TOKEN)
    most = most_one_attempt_costs(data)
    sent = scripted(monkeypatch, httpx.Response(500, json={"error": {"message": "overloaded"}, "usage": usage(2, 1)}))
    budget = LocalBudget(max_usd=most * 1.5)  # room for one attempt, not for a second
    row = engine(data, budget).augment([{"id": "1", "name": "Acme"}]).records[0]
    assert len(sent) == 1
    assert row["s_status"] == "skipped"
    assert row["s_error"] == ("skipped: budget (the budget leaves no room for attempt 2;"
                              " last: HTTP 500: overloaded)")
    assert budget.ledger.spent == pytest.approx(3) and budget.ledger.reserved == 0
    assert budget.ledger.exhausted and budget.ledger.steps["s"]["skipped"] == 1


@pytest.mark.parametrize(("attempt", "charged"), [
    (Attempt(200, {"usage": usage(5, 6)}), (5, 6, 11.0)),
    (Attempt(200, {"no": "usage"}), (0, 0, 100.0)),  # answered without saying: the most it could cost
    (Attempt(200, None), (0, 0, 100.0)),  # a body that is not JSON
    (Attempt(429, {"error": {"message": "slow down"}}), (0, 0, 0.0)),
    (Attempt(500, {"error": {}, "usage": usage(1, 0)}), (1, 0, 1.0)),
    (Attempt(unanswered=True), (0, 0, 100.0)),
    (Attempt(), (0, 0, 0.0)),  # never sent
])
def test_what_one_attempt_is_charged(attempt: Attempt, charged: tuple[int, int, float]) -> None:
    step = engine(llm_spec("https://provider.example/v1", prices=DOLLAR_A_TOKEN)).chain[0]
    assert step.charged(attempt, (60, 40)) == charged  # type: ignore[attr-defined]
