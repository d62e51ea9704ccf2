"""The waterfall augmenter: spec checks by path, and candidates tried in order against the local double."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from devtools.fake_openai import FakeOpenAI
from pipelines.engine.chain import output_schema
from pipelines.engine.inprocess import InProcessEngine
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.loader import parse_spec

NO_PROVIDERS_FILE = Path(__file__).parent / "no-such-providers.yaml"
NOT_HEALTH = "(?!health$)[a-z]+"
# What the enrichment double answers for these domains (it is deterministic):
SOFTWARE, RETAIL, FINANCE, HEALTH = "co2.example", "co3.example", "co8.example", "co0.example"
LLM_INDUSTRIES = ["software", "retail", "finance", "manufacturing", "other"]  # never 'health'


FAKE_PROVIDER = {"retry_after_s": 0.1}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def providers(base_url: str) -> dict[str, Any]:
    return {
        "api": {"kind": "http", "base_url": base_url, "allow_hosts": ["127.0.0.1"], "max_retries": 1,
                "timeout_seconds": 10, "prices": {"per_request": 0.001}},
        "oa": {"kind": "openai", "base_url": base_url, "allow_hosts": ["127.0.0.1"], "model": "fake-small",
               "max_retries": 1, "timeout_seconds": 10,
               "prices": {"input_per_million": 1.0, "output_per_million": 2.0}},
    }


HTTP = {"use": "http", "name": "api", "params": {
    "provider": "api", "path": "/enrich", "query": {"domain": "{{domain}}"}, "skip_if_empty": ["domain"],
    "outputs": {"industry": {"path": "company.industry"}}}}
LLM = {"use": "llm", "name": "model", "params": {
    "provider": "oa", "user": "Industry of {{domain}}. {{note}}", "skip_if_empty": ["domain"],
    "outputs": {"industry": {"enum": LLM_INDUSTRIES}}}}
DERIVE = {"use": "derive", "name": "fallback", "params": {"column": "industry", "expression": "lower(hint)"}}


def spec_data(waterfall: dict[str, Any], base_url: str = "http://127.0.0.1:9/v1") -> dict[str, Any]:
    return {
        "name": "firms",
        "source": {"kind": "csv", "path": "in.csv"},
        "providers": providers(base_url),
        "schema": {
            "key": "id",
            "fields": {"id": {}, "domain": {}, "hint": {}, "note": {}, "size": {"type": "integer"}},
        },
        "steps": [{"use": "waterfall", "name": "ind", "params": waterfall}],
        "sink": {"dataset": "firms"},
    }


def parsed(waterfall: dict[str, Any], base_url: str = "http://127.0.0.1:9/v1") -> WorkflowSpec:
    return parse_spec(spec_data(waterfall, base_url), providers_file=NO_PROVIDERS_FILE)


def with_params(candidate: dict[str, Any], **params: Any) -> dict[str, Any]:
    changed = copy.deepcopy(candidate)
    changed["params"].update(params)
    return changed


def spec_errors(waterfall: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parsed(waterfall)
    return caught.value.errors


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("waterfall", "error"), [
    ({"outputs": ["industry"], "candidates": [HTTP]},
     "steps[0].params.candidates: List should have at least 2 items"),
    ({"outputs": ["industry"], "candidates": [HTTP, {"use": "telepathy"}]},
     "steps[0].params: candidates[1].use: unknown augmenter 'telepathy'"),
    ({"outputs": ["industry"], "candidates": [HTTP, {"use": "waterfall", "params": {}}]},
     "steps[0].params: candidates[1].use: a waterfall cannot hold a waterfall"),
    ({"outputs": ["industry"],
      "candidates": [HTTP, {"use": "derive", "params": {"column": "sector", "expression": "hint"}}]},
     "steps[0].params.candidates[1]: does not add ['industry']"),
    ({"outputs": ["industry"],
      "candidates": [HTTP, {"use": "derive",
                            "params": {"column": "industry", "expression": "size", "type": "integer"}}]},
     "steps[0].params.candidates[1]: adds the outputs with other types than candidates[0]"),
    ({"outputs": ["industry"], "accept": {"regex": {"sector": "[a-z]+"}}, "candidates": [HTTP, LLM]},
     "steps[0].params: accept.regex: 'sector' is not one of the outputs"),
    ({"outputs": ["industry"], "accept": {"regex": {"industry": "([a-z"}}, "candidates": [HTTP, LLM]},
     "steps[0].params.accept.regex: industry: invalid regular expression"),
    ({"outputs": ["industry"], "candidates": [HTTP, with_params(LLM, provider="ghost")]},
     "steps[0].params.candidates[1].params.provider: unknown provider 'ghost' (declared: api, oa)"),
    ({"outputs": ["industry"], "candidates": [with_params(HTTP, provider="oa"), LLM]},
     "steps[0].params.candidates[0].params.provider: provider 'oa' is of kind openai; http needs kind http"),
    ({"outputs": ["industry"], "candidates": [HTTP, with_params(LLM, user="About {{ghost}}")]},
     "steps[0].params.candidates[1].params.user: 'ghost' is not a field of the schema"),
    ({"outputs": ["industry"], "candidates": [with_params(HTTP, query={"d": "{{nope}}"}), LLM]},
     "steps[0].params.candidates[0].params.query: 'nope' is not a field of the schema"),
    ({"outputs": ["industry"],
      "candidates": [HTTP, {"use": "derive", "params": {"column": "industry", "expression": "lower(size)"}}]},
     "steps[0].params.candidates[1].params.expression:"),
    ({"outputs": ["industry"], "candidates": [HTTP, LLM], "colour": "red"}, "steps[0].params.colour: unknown key"),
])
def test_bad_params_are_reported_by_path(waterfall: dict[str, Any], error: str) -> None:
    errors = spec_errors(waterfall)
    assert any(e.startswith(error) for e in errors), errors


def test_a_bad_candidate_param_names_the_candidates_path() -> None:
    """BUG (see report): a candidate's own params are validated in Waterfall.__init__, and
    check_steps reports the ValidationError under steps[i].params.<param>, losing
    candidates[j].params: 'steps[0].params.temperature' for candidate 1's temperature."""
    errors = spec_errors({"outputs": ["industry"], "candidates": [HTTP, with_params(LLM, temperature=9)]})
    assert any(e.startswith("steps[0].params.candidates[1].params.temperature: Input should be less than or equal to 2")
               for e in errors), errors


def test_a_good_waterfall_declares_the_candidates_types_and_its_own_columns() -> None:
    spec = parsed(
        {"outputs": ["industry"], "accept": {"regex": {"industry": NOT_HEALTH}}, "candidates": [HTTP, LLM, DERIVE]}
    )
    schema = output_schema(spec)
    assert schema.names[-5:] == ["industry", "ind_source", "ind_status", "ind_error", "ind_provenance"]
    assert all(schema.field(n).type == pa.string() for n in schema.names[-5:])
    assert "api_status" not in schema.names  # the candidates' own columns stay inside


# --- records ----------------------------------------------------------------------------------


def three_way(fake: FakeOpenAI) -> InProcessEngine:
    return InProcessEngine(parsed({"outputs": ["industry"], "accept": {"regex": {"industry": NOT_HEALTH}},
                                  "candidates": [HTTP, LLM, DERIVE]}, fake.base_url))


def trail(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["ind_provenance"])


def test_each_record_takes_the_first_accepted_candidate(fake: FakeOpenAI) -> None:
    records = three_way(fake).augment([
        {"id": "1", "domain": SOFTWARE}, {"id": "2", "domain": RETAIL}, {"id": "3", "domain": FINANCE},
        {"id": "4", "domain": "gone#404"},  # the API has no such company: the model answers
        {"id": "5", "domain": HEALTH},  # the API's value fails accept.regex: the model answers
        {"id": "6", "domain": "dead#404", "note": "#400", "hint": "Retail"},  # API 404, model 400: the rule answers
        {"id": "7", "hint": "Finance"},  # nothing to send: both calls skip, the rule answers
    ]).records
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5", "6", "7"]
    assert [r["ind_source"] for r in records] == ["api", "api", "api", "model", "model", "fallback", "fallback"]
    assert [r["ind_status"] for r in records] == ["ok"] * 7
    assert [r["ind_error"] for r in records] == [None] * 7
    assert [r["industry"] for r in records[:3]] == ["software", "retail", "finance"]
    assert records[3]["industry"] in LLM_INDUSTRIES and records[4]["industry"] in LLM_INDUSTRIES
    assert [r["industry"] for r in records[5:]] == ["retail", "finance"]
    assert fake.stats()["requests"] == 6 + 3  # the model saw only the records the API did not settle

    first = trail(records[0])
    assert first["step"] == "api" and first["augmenter"] == "http" and first["provider"] == "api"
    assert first["cost_usd"] == pytest.approx(0.001) and first["attempts"] == 1
    assert first["waterfall"] == {"step": "ind", "passed_over": []}

    missing = trail(records[3])
    assert missing["step"] == "model" and missing["augmenter"] == "llm" and missing["model"] == "fake-small"
    assert missing["tokens_in"] > 0 and missing["cost_usd"] > 0
    assert missing["waterfall"]["passed_over"] == ["api: HTTP 404: no company for gone#404"]

    rejected = trail(records[4])
    assert rejected["step"] == "model"
    assert rejected["waterfall"]["passed_over"] == [f"api: industry 'health' does not match {NOT_HEALTH!r}"]

    ruled = trail(records[5])
    assert ruled["augmenter"] == "derive"
    assert ruled["waterfall"]["passed_over"] == [
        "api: HTTP 404: no company for dead#404", "model: HTTP 400: bad request: marker #400"]
    assert trail(records[6])["waterfall"]["passed_over"] == [
        "api: skipped: domain is empty", "model: skipped: domain is empty"]


def test_a_record_no_candidate_accepts_is_an_error_with_every_reason(fake: FakeOpenAI) -> None:
    records = three_way(fake).augment([
        {"id": "1", "domain": "dead#404", "note": "#400"},
        {"id": "2"},  # calls skipped, and the rule has no hint: not 'skipped', an error
        {"id": "3", "domain": SOFTWARE},
    ]).records
    assert [r["id"] for r in records] == ["1", "2", "3"]  # never dropped
    failed, empty, fine = records
    assert failed["ind_status"] == "error" and failed["industry"] is None and failed["ind_source"] is None
    assert failed["ind_error"] == ("no candidate was accepted: api: HTTP 404: no company for dead#404;"
                                   " model: HTTP 400: bad request: marker #400; fallback: empty industry")
    assert len(trail(failed)["waterfall"]["passed_over"]) == 3
    assert empty["ind_status"] == "error" and empty["ind_error"] == (
        "no candidate was accepted: api: skipped: domain is empty; model: skipped: domain is empty;"
        " fallback: empty industry")
    assert fine["ind_status"] == "ok" and fine["ind_source"] == "api"


def test_a_record_every_candidate_skips_is_skipped(fake: FakeOpenAI) -> None:
    workflow = InProcessEngine(parsed({"outputs": ["industry"], "candidates": [HTTP, LLM]}, fake.base_url))
    skipped, called = workflow.augment(
        [{"id": "1", "hint": "x"}, {"id": "2", "domain": "gone#404", "note": "#400"}]
    ).records
    assert skipped["ind_status"] == "skipped" and skipped["industry"] is None and skipped["ind_source"] is None
    assert (
        skipped["ind_error"]
        == "no candidate was accepted: api: skipped: domain is empty; model: skipped: domain is empty"
    )
    assert called["ind_status"] == "error"
    assert called["ind_error"] == ("no candidate was accepted: api: HTTP 404: no company for gone#404;"
                                   " model: HTTP 400: bad request: marker #400")
    assert fake.stats()["requests"] == 2


def test_non_empty_rejects_a_null_value_from_an_ok_call(fake: FakeOpenAI) -> None:
    absent = with_params(HTTP, outputs={"industry": {"path": "company.sector"}})  # not in the reply: null, status ok
    workflow = InProcessEngine(parsed({"outputs": ["industry"], "candidates": [absent, DERIVE]}, fake.base_url))
    [record] = workflow.augment([{"id": "1", "domain": SOFTWARE, "hint": "Other"}]).records
    assert record["ind_source"] == "fallback" and record["industry"] == "other"
    assert trail(record)["waterfall"]["passed_over"] == ["api: empty industry"]


def test_without_non_empty_an_ok_null_is_accepted(fake: FakeOpenAI) -> None:
    absent = with_params(HTTP, outputs={"industry": {"path": "company.sector"}})
    workflow = InProcessEngine(parsed({"outputs": ["industry"], "accept": {"non_empty": False},
                                      "candidates": [absent, DERIVE]}, fake.base_url))
    [record] = workflow.augment([{"id": "1", "domain": SOFTWARE, "hint": "Other"}]).records
    assert record["ind_status"] == "ok" and record["ind_source"] == "api" and record["industry"] is None


def test_a_deterministic_first_candidate_saves_the_calls(fake: FakeOpenAI) -> None:
    workflow = InProcessEngine(parsed({"outputs": ["industry"], "candidates": [DERIVE, HTTP]}, fake.base_url))
    ruled, called = workflow.augment([{"id": "1", "domain": SOFTWARE, "hint": "Retail"},
                                      {"id": "2", "domain": SOFTWARE}]).records
    assert (ruled["ind_source"], ruled["industry"]) == ("fallback", "retail")
    assert trail(ruled)["augmenter"] == "derive" and trail(ruled)["waterfall"]["passed_over"] == []
    assert (called["ind_source"], called["industry"]) == ("api", "software")
    assert trail(called)["waterfall"]["passed_over"] == ["fallback: empty industry"]
    assert fake.stats()["requests"] == 1
