"""The local OpenAI double: schema-true replies, deterministic embeddings and enrichment, faults and rate limits."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from datetime import date
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, Field, ValidationError

from devtools.fake_openai import INDUSTRIES, FakeOpenAI, fake_value


class Office(BaseModel):
    city: str = Field(max_length=8)
    country: Literal["NL", "DE", "FR"]


class Company(BaseModel):
    sector: Literal["software", "retail", "finance"]
    name: str
    employees: int = Field(ge=1, le=500)
    revenue: float = Field(ge=0, le=10)
    public: bool
    website: str | None
    hq: Office
    offices: list[Office]


COMPANY_FORMAT = {"type": "json_schema",
                  "json_schema": {"name": "company", "schema": Company.model_json_schema(), "strict": True}}


FAKE_PROVIDER = {"retry_after_s": 0.1, "timeout_sleep_s": 0.5}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAI) -> None:
    fake.configure(rpm=None, tpm=None, latency_ms=(0, 0), error_rate=0.0)
    fake.reset()


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5) as c:
        yield c


def chat(client: httpx.Client, text: str, response_format: dict[str, Any] | None = None,
         model: str = "fake-model") -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "system", "content": "Fill in the company."},
                                                         {"role": "user", "content": text}]}
    if response_format:
        body["response_format"] = response_format
    return client.post("/chat/completions", json=body)


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_base_url_has_a_real_port(fake: FakeOpenAI) -> None:
    assert (
        fake.port > 0 and fake.base_url == f"http://127.0.0.1:{fake.port}/v1" and fake.root_url + "/v1" == fake.base_url
    )


def test_chat_reply_satisfies_the_schema(client: httpx.Client) -> None:
    response = chat(client, "Acme BV, Utrecht", COMPANY_FORMAT)
    reply = response.json()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["finish_reason"] == "stop"
    company = Company.model_validate_json(content(response), strict=True)
    assert company.website is not None and company.offices
    usage = reply["usage"]
    assert usage["prompt_tokens"] == math.ceil((len("Fill in the company.") + len("Acme BV, Utrecht")) / 4)
    assert usage["completion_tokens"] == math.ceil(len(content(response)) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_reply_is_deterministic(client: httpx.Client) -> None:
    first = content(chat(client, "Initech", COMPANY_FORMAT))
    assert content(chat(client, "Initech", COMPANY_FORMAT)) == first
    assert content(chat(client, "Initech", COMPANY_FORMAT, model="other-model")) != first


def test_chat_without_response_format_echoes_the_last_user_message(client: httpx.Client) -> None:
    assert content(chat(client, "hello " + "x" * 300)) == "echo: hello " + "x" * 194


def test_schema_values_respect_nullable_types_and_bounds() -> None:
    schema = {"type": "object", "properties": {
        "note": {"type": ["string", "null"], "maxLength": 3},
        "year": {"type": "integer", "minimum": 1990, "maximum": 1995},
        "score": {"type": "number", "maximum": -5},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
        "day": {"type": "string", "format": "date"},
    }, "required": ["note", "year", "score", "count", "day"], "additionalProperties": False}
    for seed in (b"a", b"b", b"c", b"d"):
        value = fake_value(schema, seed)
        assert isinstance(value["note"], str) and len(value["note"]) <= 3
        assert 1990 <= value["year"] <= 1995 and value["score"] <= -5 and value["count"] in (1, 2)
        date.fromisoformat(value["day"])


def test_malformed_chat_body_is_400(client: httpx.Client) -> None:
    for response in (client.post("/chat/completions", content=b"{not json"),
                     client.post("/chat/completions", json={"model": "m"})):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_are_deterministic_unit_vectors(client: httpx.Client) -> None:
    reply = client.post("/embeddings", json={"model": "e", "input": ["alpha", "beta", "alpha"]}).json()
    vectors = [item["embedding"] for item in reply["data"]]
    assert reply["object"] == "list" and [item["index"] for item in reply["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and math.isclose(math.hypot(*v), 1.0) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert reply["usage"]["prompt_tokens"] == math.ceil(len("alphabetaalpha") / 4)
    single = client.post("/embeddings", json={"model": "e", "input": "alpha", "dimensions": 16}).json()
    again = client.post("/embeddings", json={"model": "e", "input": "alpha", "dimensions": 16}).json()
    assert len(single["data"][0]["embedding"]) == 16 and single["data"] == again["data"]


def test_enrich_by_get_and_post(client: httpx.Client) -> None:
    got = client.get("/enrich", params={"domain": "acme.com"})
    posted = client.post("/enrich", json={"domain": "acme.com"})
    assert got.status_code == posted.status_code == 200 and got.json() == posted.json()
    body = got.json()
    assert body["domain"] == "acme.com" and body["company"]["industry"] in INDUSTRIES
    assert 1950 <= body["company"]["founded"] <= 2020 and isinstance(body["company"]["employees"], int)
    assert len(body["tags"]) == 2 and all(isinstance(t, str) for t in body["tags"])
    assert client.get("/enrich", params={"domain": "other.org"}).json() != body


def test_enrich_errors(client: httpx.Client) -> None:
    missing = client.get("/enrich")
    assert missing.status_code == 400 and missing.json() == {"error": {"message": "domain is required"}}
    unknown = client.post("/enrich", json={"domain": "gone.example#404"})
    assert unknown.status_code == 404 and unknown.json() == {"error": {"message": "no company for gone.example#404"}}


def test_api_key_is_required_when_configured() -> None:
    with FakeOpenAI(api_key="sk-test") as server, httpx.Client(base_url=server.base_url, timeout=5) as client:
        denied = chat(client, "hi")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        client.headers["Authorization"] = "Bearer sk-test"
        assert content(chat(client, "hi")) == "echo: hi"


def test_429_marker_fails_the_first_attempts_then_succeeds(client: httpx.Client, fake: FakeOpenAI) -> None:
    for _ in range(2):
        response = chat(client, "Globex #429x2")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1" and response.headers["retry-after-ms"] == "100"
        assert response.json()["error"]["type"] == "rate_limit_exceeded"
    assert content(chat(client, "Globex #429x2")) == "echo: Globex #429x2"
    assert fake.stats()["rate_limited"] == 0  # injected faults are not the limiter's


def test_500_and_503_markers(client: httpx.Client) -> None:
    assert chat(client, "Umbrella #500x1").status_code == 500
    assert chat(client, "Umbrella #500x1").status_code == 200
    assert chat(client, "Umbrella #503").status_code == 503
    assert chat(client, "Umbrella #503").status_code == 200


def test_truncated_marker_cuts_the_json(client: httpx.Client) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(content(chat(client, "Hooli #truncatedx1", COMPANY_FORMAT)))
    Company.model_validate_json(content(chat(client, "Hooli #truncatedx1", COMPANY_FORMAT)), strict=True)


def test_badschema_marker_breaks_the_first_required_field(client: httpx.Client) -> None:
    broken = json.loads(content(chat(client, "Stark #badschemax1", COMPANY_FORMAT)))
    assert broken["sector"] not in ("software", "retail", "finance")
    with pytest.raises(ValidationError):
        Company.model_validate(broken, strict=True)
    Company.model_validate_json(content(chat(client, "Stark #badschemax1", COMPANY_FORMAT)), strict=True)


def test_400_marker_always_fails(client: httpx.Client) -> None:
    for _ in range(3):
        response = chat(client, "Wayne #400")
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "bad request: marker #400"


def test_timeout_marker_stalls_the_first_attempt(client: httpx.Client, fake: FakeOpenAI) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post("/embeddings", json={"model": "e", "input": "Tyrell #timeoutx1"}, timeout=0.2)
    assert client.post("/embeddings", json={"model": "e", "input": "Tyrell #timeoutx1"}).status_code == 200
    deadline = time.monotonic() + 2
    while fake.stats()["in_flight"] and time.monotonic() < deadline:  # the stalled reply finishes server-side
        time.sleep(0.05)


def test_rpm_limit_holds_per_second(fake: FakeOpenAI) -> None:
    fake.configure(rpm=600, latency_ms=(100, 100))  # admitted requests overlap, rejected ones return at once

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fake.base_url, timeout=5) as client:
            return await asyncio.gather(*(client.post("/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": f"row {i}"}]}) for i in range(30)))

    responses = asyncio.run(burst())
    limited = [r for r in responses if r.status_code == 429]
    stats = fake.stats()
    assert limited and len(limited) + stats["by_status"]["200"] == 30 and stats["rate_limited"] == len(limited)
    assert max(stats["admitted_per_second"].values()) <= 10 and stats["max_in_flight"] > 1
    assert int(limited[0].headers["retry-after"]) >= 1 and int(limited[0].headers["retry-after-ms"]) <= 1000
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "10" and ok.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tpm_limit_counts_prompt_and_completion_tokens_per_second(fake: FakeOpenAI, client: httpx.Client) -> None:
    first = chat(client, "row 0").json()["usage"]["total_tokens"]
    fake.reset()
    fake.configure(tpm=60 * 3 * first)  # three such requests a second

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fake.base_url, timeout=5) as http:
            return await asyncio.gather(*(http.post("/chat/completions", json={"model": "fake-model", "messages": [
                {"role": "system", "content": "Fill in the company."}, {"role": "user", "content": "row 0"}]})
                for _ in range(10)))

    responses = asyncio.run(burst())
    stats = fake.stats()
    admitted = [r for r in responses if r.status_code == 200]
    assert 3 <= len(admitted) <= 6 and stats["rate_limited"] == 10 - len(admitted)  # one or two windows
    assert all(n <= 3 for n in stats["admitted_per_second"].values())
    assert sum(stats["tokens_per_second"].values()) == len(admitted) * first
    assert admitted[0].headers["x-ratelimit-limit-tokens"] == str(3 * first)
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["x-ratelimit-remaining-tokens"] == "0"


def test_error_rate_fails_a_share_of_attempts_reproducibly(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.configure(error_rate=0.3)
    first = [chat(client, f"row {i}").status_code for i in range(200)]
    fake.reset()
    again = [chat(client, f"row {i}").status_code for i in range(200)]
    assert first == again  # the same attempts fail after a reset
    failed = first.count(500)
    assert set(first) == {200, 500} and 35 <= failed <= 85
    retried = [chat(client, f"row {i}").status_code for i, status in enumerate(again) if status == 500]
    assert retried.count(200) > len(retried) / 2  # a second attempt draws again
    with pytest.raises(ValueError, match="error_rate"):
        fake.configure(error_rate=1.0)


def test_stats_count_requests(client: httpx.Client, fake: FakeOpenAI) -> None:
    chat(client, "one")
    chat(client, "two")
    chat(client, "three #400")
    stats = fake.stats()
    assert stats["requests"] == 3 and stats["by_status"] == {"200": 2, "400": 1}
    assert sum(stats["admitted_per_second"].values()) == 3 and stats["in_flight"] == 0
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] == 2 * math.ceil(len("echo: one") / 4)
    assert stats["first_at"] <= stats["last_at"]
    assert httpx.get(fake.root_url + "/_stats").json() == stats


def test_stats_count_requests_per_idempotency_key(client: httpx.Client, fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi #500x1"}]}
    for key in ("call-1", "call-1", "call-2", None):
        client.post("/chat/completions", json=body, headers={"Idempotency-Key": key} if key else {})
    assert fake.stats()["idempotency_keys"] == {"call-1": 2, "call-2": 1}
    fake.reset()
    assert fake.stats()["idempotency_keys"] == {}


def test_reset_and_control_over_http(client: httpx.Client, fake: FakeOpenAI) -> None:
    assert chat(client, "Soylent #500").status_code == 500
    assert chat(client, "Soylent #500").status_code == 200
    reset = httpx.post(fake.root_url + "/_reset").json()
    assert reset["requests"] == 0 and reset["by_status"] == {} and reset["first_at"] is None
    assert chat(client, "Soylent #500").status_code == 500  # fault attempts start over too
    knobs = httpx.post(fake.root_url + "/_control", json={"rpm": 1200, "latency_ms": [1, 2]}).json()
    assert knobs["rpm"] == 1200 and knobs["latency_ms"] == [1.0, 2.0] and fake.rpm == 1200
    assert httpx.post(fake.root_url + "/_control", json={"nope": 1}).status_code == 400
