"""The embed augmenter against the local OpenAI double: typed vectors, checks, cost and the cache."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from augment_core.settings import Settings
from devtools.fake_openai import FakeOpenAI, embedding_of
from pipelines.augmenters.embed import Embed
from pipelines.augmenters.inference_base import InvalidReply
from pipelines.augmenters.registry import build_step
from pipelines.engine.chain import output_schema
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.context import RunContext
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.loader import parse_spec

NO_PROVIDERS_FILE = Path(__file__).parent / "no-such-providers.yaml"
INPUT_PER_MILLION = 1000.0  # $0.001 a prompt token: costs big enough to compare
DIMS = 4


FAKE_PROVIDER = {"retry_after_s": 0.1, "embedding_dim": 8}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def spec_of(base_url: str, **params: Any) -> WorkflowSpec:
    return parse_spec(
        {
            "name": "vectors",
            "source": {"kind": "csv", "path": "in.csv"},
            "providers": {
                "oa": {
                    "kind": "openai",
                    "base_url": base_url,
                    "allow_hosts": ["127.0.0.1"],
                    "model": "emb-small",
                    "max_retries": 1,
                    "timeout_seconds": 10,
                    "prices": {"input_per_million": INPUT_PER_MILLION},
                }
            },
            "schema": {"key": "id", "fields": {"id": {}, "text": {}}},
            "steps": [
                {
                    "use": "embed",
                    "name": "emb",
                    "params": {"provider": "oa", "column": "text", "dimensions": DIMS, **params},
                }
            ],
            "sink": {"dataset": "vectors"},
        },
        providers_file=NO_PROVIDERS_FILE,
    )


def provenance(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["emb_provenance"])


def as_float32(values: list[float]) -> list[float]:
    return np.asarray(values, dtype=np.float32).tolist()


# --- the spec ---------------------------------------------------------------------------------


def test_the_vector_is_declared_list_of_float32() -> None:
    schema = output_schema(spec_of("http://127.0.0.1:9/v1"))
    assert schema.field("text_embedding").type == pa.list_(pa.float32())
    named = output_schema(spec_of("http://127.0.0.1:9/v1", output="vec"))
    assert named.names[-4:] == ["vec", "emb_status", "emb_error", "emb_provenance"]


@pytest.mark.parametrize(("params", "error"), [
    ({"dimensions": 0}, "steps[0].params.dimensions: Input should be greater than or equal to 1"),
    ({"column": "nope"}, "steps[0].params.column: 'nope' is not a field"),
    ({"skip_if_empty": ["ghost"]}, "steps[0].params.skip_if_empty: 'ghost' is not a field"),
])
def test_bad_params_are_reported_by_path(params: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_of("http://127.0.0.1:9/v1", **params)
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors


def test_a_provider_without_a_model_needs_one_on_the_step() -> None:
    data = {"name": "v", "source": {"kind": "csv", "path": "in.csv"},
            "providers": {"oa": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "schema": {"fields": {"text": {}}},
            "steps": [{"use": "embed", "params": {"provider": "oa", "column": "text"}}], "sink": {"dataset": "v"}}
    with pytest.raises(SpecError, match=r"steps\[0\]\.params\.model: no model"):
        parse_spec(data, providers_file=NO_PROVIDERS_FILE)
    data["steps"][0]["params"]["model"] = "emb-large"
    parse_spec(data, providers_file=NO_PROVIDERS_FILE)


# --- vectors ----------------------------------------------------------------------------------


def test_the_worker_path_gives_float32_vectors_of_the_asked_dimension(fake: FakeOpenAI) -> None:
    spec = spec_of(fake.base_url)
    step = build_step(spec.steps[0], "emb")
    step.bind(RunContext(providers=spec.providers))
    step.setup()
    table = step.apply(pa.table({"text": pa.array(["Acme makes anvils", "Globex", "Acme makes anvils"], pa.string())}))
    assert table.schema.field("text_embedding").type == pa.list_(pa.float32())
    vectors = table["text_embedding"].to_pylist()
    assert [len(v) for v in vectors] == [DIMS] * 3
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]  # deterministic, per text
    assert vectors[0] == pytest.approx(as_float32(embedding_of("Acme makes anvils", DIMS)), abs=1e-7)
    assert math.sqrt(sum(x * x for x in vectors[1])) == pytest.approx(1.0, abs=1e-5)
    assert table["emb_status"].to_pylist() == ["ok"] * 3


def test_online_vectors_are_deterministic_between_calls(fake: FakeOpenAI) -> None:
    workflow = InProcessEngine(spec_of(fake.base_url))
    records = [{"id": "1", "text": "hello world!"}, {"id": "2", "text": "Ünïcode – text"}]
    first = workflow.augment(records).records
    second = InProcessEngine(spec_of(fake.base_url)).augment(records).records
    assert [r["text_embedding"] for r in first] == [r["text_embedding"] for r in second]
    assert all(r["emb_status"] == "ok" and len(r["text_embedding"]) == DIMS for r in first)
    assert fake.stats()["requests"] == 4  # no cache without settings: each call was sent


def test_a_blank_text_is_skipped_and_not_sent(fake: FakeOpenAI) -> None:
    workflow = InProcessEngine(spec_of(fake.base_url))
    records = workflow.augment(
        [{"id": "1", "text": "   "}, {"id": "2"}, {"id": "3", "text": ""}, {"id": "4", "text": "x"}]
    ).records
    assert [r["emb_status"] for r in records] == ["skipped", "skipped", "skipped", "ok"]
    assert [r["emb_error"] for r in records[:3]] == ["skipped: text is empty"] * 3
    assert all(r["text_embedding"] is None for r in records[:3])
    assert fake.stats()["requests"] == 1


def test_cost_is_prompt_tokens_times_the_input_price(fake: FakeOpenAI) -> None:
    text = "twelve chars" * 3  # 36 characters: 9 tokens as the double counts them
    [record] = InProcessEngine(spec_of(fake.base_url)).augment([{"id": "1", "text": text}]).records
    trail = provenance(record)
    assert trail["tokens_in"] == 9 and trail["tokens_out"] == 0
    assert trail["cost_usd"] == pytest.approx(9 * INPUT_PER_MILLION / 1e6)
    assert trail["model"] == "emb-small" and trail["provider"] == "oa" and trail["augmenter"] == "embed"
    assert fake.stats()["prompt_tokens"] == 9


def test_a_reply_of_the_wrong_dimension_is_an_error(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = Embed.build_request

    def without_dimensions(self: Embed, record: Any) -> Any:  # the server then answers its default, 8
        request = asked(self, record)
        request.json.pop("dimensions")
        return request

    monkeypatch.setattr(Embed, "build_request", without_dimensions)
    [record] = InProcessEngine(spec_of(fake.base_url)).augment([{"id": "1", "text": "Acme"}]).records
    assert record["emb_status"] == "error" and record["text_embedding"] is None
    assert record["emb_error"] == "invalid reply after 1 tries: the embedding has 8 dimensions, 4 were asked"
    assert provenance(record)["tokens_in"] == 1  # the call was billed all the same


def test_a_server_error_is_retried(fake: FakeOpenAI) -> None:
    [record] = InProcessEngine(spec_of(fake.base_url)).augment([{"id": "1", "text": "flaky #500x1"}]).records
    assert record["emb_status"] == "ok" and provenance(record)["attempts"] == 2


def test_a_rejected_request_is_an_error_with_the_providers_message(fake: FakeOpenAI) -> None:
    [record] = InProcessEngine(spec_of(fake.base_url)).augment([{"id": "1", "text": "bad #400"}]).records
    assert record["emb_status"] == "error" and record["emb_error"] == "HTTP 400: bad request: marker #400"


def embed_step(**params: Any) -> Embed:
    spec = spec_of("http://127.0.0.1:9/v1", **params)
    return build_step(spec.steps[0], "emb")  # type: ignore[return-value]


def body(vector: Any) -> dict[str, Any]:
    return {"data": [{"embedding": vector}]}


@pytest.mark.parametrize(("reply", "reason"), [
    (None, "no data[0].embedding"),
    ([], "no data[0].embedding"),
    ({"data": []}, "no data[0].embedding"),
    ({"data": [{}]}, "no data[0].embedding"),
    ({"data": "x"}, "no data[0].embedding"),
    (body("0.1,0.2"), "not a non-empty list"),
    (body({"0": 1.0}), "not a non-empty list"),
    (body([]), "not a non-empty list"),
    (body([0.1, float("nan"), 0.2, 0.3]), "not finite numbers"),
    (body([0.1, float("inf"), 0.2, 0.3]), "not finite numbers"),
    (body([True, False, 1.0, 0.0]), "not finite numbers"),
    (body([0.1, "0.2", 0.3, 0.4]), "not finite numbers"),
    (body([0.1, None, 0.3, 0.4]), "not finite numbers"),
    (body([[0.1], 0.2, 0.3, 0.4]), "not finite numbers"),
    (body([0.1, 0.2, 0.3]), "the embedding has 3 dimensions, 4 were asked"),
    (body([0.1] * 5), "the embedding has 5 dimensions, 4 were asked"),
])
def test_parse_refuses_what_is_not_a_vector(reply: Any, reason: str) -> None:
    with pytest.raises(InvalidReply, match=re.escape(reason)):
        embed_step().parse(reply)


def test_parse_takes_integers_and_any_dimension_when_none_was_asked() -> None:
    assert embed_step().parse(body([1, 0, 0.5, -2])) == {"text_embedding": [1.0, 0.0, 0.5, -2.0]}
    assert embed_step(dimensions=None).parse(body([0.25] * 7)) == {"text_embedding": [0.25] * 7}


# --- the cache --------------------------------------------------------------------------------


def test_a_second_workflow_on_the_same_store_is_served_from_the_cache(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = Settings(storage_root=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'cache.db'}")
    spec = spec_of(fake.base_url)
    records = [
        {"id": "1", "text": "Acme makes anvils"},
        {"id": "2", "text": "Globex sells globes"},
        {"id": "3", "text": " "},
    ]
    first = InProcessEngine(spec, RunContext(providers=spec.providers, settings=settings)).augment(records).records
    assert fake.stats()["requests"] == 2
    assert [provenance(r)["cache_hit"] for r in first] == [False, False, False]
    fake.reset()
    again = InProcessEngine(spec, RunContext(providers=spec.providers, settings=settings)).augment(records).records
    assert fake.stats()["requests"] == 0
    assert [r["emb_status"] for r in again] == ["ok", "ok", "skipped"]
    assert [r["text_embedding"] for r in again] == [r["text_embedding"] for r in first]
    hits = [provenance(r) for r in again[:2]]
    assert all(p["cache_hit"] and p["attempts"] == 0 and p["cost_usd"] == 0 for p in hits)
    assert [p["cached_tokens_in"] for p in hits] == [provenance(r)["tokens_in"] for r in first[:2]]
    # another dimension is another request: not served from the cache
    other = spec_of(fake.base_url, dimensions=DIMS + 1)
    [record] = (
        InProcessEngine(other, RunContext(providers=other.providers, settings=settings)).augment(records[:1]).records
    )
    assert len(record["text_embedding"]) == DIMS + 1 and not provenance(record)["cache_hit"]
    assert fake.stats()["requests"] == 1
