"""The llm augmenter: the spec checks a user meets before anything runs, how replies are judged,
and records augmented end to end on the online path against the fake OpenAI server."""

from __future__ import annotations

import copy
import itertools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml

from augment_core.settings import Settings
from devtools.fake_openai import FakeOpenAI
from pipelines.augmenters.inference_base import InvalidReply
from pipelines.augmenters.llm import Llm, LlmParams
from pipelines.augmenters.registry import build_chain
from pipelines.engine.chain import StepError, setup_chain
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.budget import LocalBudget
from pipelines.inference.context import RunContext
from pipelines.inference.permits import LocalPermits
from pipelines.operations.preview import dry_chain
from pipelines.spec.errors import SpecError
from pipelines.workflows.loader import parse_spec

SECRET = "sk-test-DO-NOT-LEAK-8c1f3e9a7b"
KEY_ENV = "AUGMENT_TEST_LLM_KEY"
PRICES = {"input_per_million": 0.15, "output_per_million": 0.60}
NO_FILE = "/nonexistent/providers.yaml"
_accounts = itertools.count()

OUTPUTS = {
    "industry": {"description": "Main industry.", "enum": ["software", "retail", "finance", "other"]},
    "pitch": {"description": "One sentence."},
    "employees": {"type": "integer"},
    "b2b": {"type": "boolean"},
    "score": {"type": "number"},
}


def spec_data(base_url: str = "http://127.0.0.1:9/v1", **step_params: Any) -> dict[str, Any]:
    params = {
        "provider": "fake", "system": "You profile companies. Answer in JSON.",
        "user": "Company: {{name}}\nNote: {{note}}", "outputs": copy.deepcopy(OUTPUTS), "max_tokens": 100,
    }
    params.update(step_params)
    return {
        "name": "llm_unit",
        "providers": {"fake": {
            "kind": "openai", "base_url": base_url, "allow_hosts": ["127.0.0.1"], "model": "fake-small",
            "account": f"llmunit{next(_accounts)}", "prices": PRICES, "timeout_seconds": 10, "max_retries": 2,
        }},
        "source": {"kind": "csv", "path": "unused.csv"},
        "schema": {"key": "id", "fields": {
            "id": {"type": "string", "required": True}, "name": {"type": "string", "required": True},
            "note": {"type": "string"}, "size": {"type": "integer"},
        }},
        "steps": [{"use": "llm", "name": "profile", "params": params}],
        "sink": {"dataset": "llm_unit_out"},
    }


def errors_of(data: dict[str, Any], providers_file: str | Path = NO_FILE) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "llm.yaml", providers_file=providers_file)
    return info.value.errors


# the spec, checked before anything runs ----------------------------------------------------------
def test_the_base_spec_is_valid() -> None:
    spec = parse_spec(spec_data(), providers_file=NO_FILE)
    assert spec.providers["fake"].model == "fake-small"


def test_a_placeholder_that_is_no_column_is_named_with_its_path() -> None:
    data = spec_data(user="Company: {{name}} in {{hometown}}")
    assert errors_of(data) == [
        "steps[0].params.user: 'hometown' is not a field of the schema or a column added by an earlier step"
    ]


def test_a_placeholder_of_the_system_prompt_is_checked_too() -> None:
    assert errors_of(spec_data(system="You know {{sector}}.")) == [
        "steps[0].params.system: 'sector' is not a field of the schema or a column added by an earlier step"
    ]


def test_placeholders_may_read_columns_of_earlier_steps_and_any_type() -> None:
    data = spec_data(user="{{name_clean}} has {{size}} staff")
    data["steps"].insert(0, {"use": "clean_company_name", "params": {"column": "name"}})
    spec = parse_spec(data, providers_file=NO_FILE)
    assert spec.step_names() == ["clean_company_name_0", "profile"]


@pytest.mark.parametrize("template", ["Company: {{ 1x }}", "Company: {{name}", "{{}}", "{{ name-x }}"])
def test_a_malformed_placeholder_is_refused(template: str) -> None:
    errors = errors_of(spec_data(user=template))
    assert len(errors) == 1
    assert errors[0].startswith("steps[0].params.user: malformed placeholder at character")
    assert "use {{field}} with a field name" in errors[0]


def test_an_unknown_provider_names_the_declared_ones() -> None:
    errors = errors_of(spec_data(provider="nope"))
    assert errors == [
        "steps[0].params.provider: unknown provider 'nope' (declared: fake); declare it under providers:"
        " in the workflow or in the providers file"
    ]


def test_a_provider_of_the_wrong_kind_is_refused() -> None:
    data = spec_data()
    data["providers"]["fake"]["kind"] = "http"
    assert errors_of(data) == ["steps[0].params.provider: provider 'fake' is of kind http; llm needs kind openai"]


def test_a_model_is_needed_somewhere() -> None:
    data = spec_data()
    del data["providers"]["fake"]["model"]
    assert errors_of(data) == [
        "steps[0].params.model: no model: set it here or as the default model of provider 'fake'"
    ]
    data["steps"][0]["params"]["model"] = "fake-large"  # in the step instead: fine
    assert parse_spec(data, providers_file=NO_FILE).steps[0].params["model"] == "fake-large"


def test_an_enum_on_a_non_string_output_is_refused() -> None:
    outputs = {"employees": {"type": "integer", "enum": ["1", "2"]}}
    errors = errors_of(spec_data(outputs=outputs))
    assert errors == ["steps[0].params.outputs.employees: enum applies to string outputs"]


def test_output_names_must_be_identifiers() -> None:
    errors = errors_of(spec_data(outputs={"1st": {}, "ok": {}}))
    assert len(errors) == 1
    assert errors[0].startswith("steps[0].params.outputs: ")
    assert "output name '1st' must start with a letter" in errors[0]


def test_an_output_that_exists_already_is_refused() -> None:
    errors = errors_of(spec_data(outputs={"note": {}}))
    assert errors == ["steps[0]: adds 'note', which already exists (set overwrite: true to replace it)"]


def test_several_problems_are_reported_at_once() -> None:
    errors = errors_of(spec_data(provider="nope", user="{{missing}}"))
    assert len(errors) == 2
    assert any(e.startswith("steps[0].params.provider: unknown provider 'nope'") for e in errors)
    assert any(e.startswith("steps[0].params.user: 'missing'") for e in errors)


# providers from the providers file ---------------------------------------------------------------
def write_providers(path: Path, providers: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers}))
    return path


def test_a_provider_missing_from_the_spec_comes_from_the_providers_file(tmp_path: Path) -> None:
    file = write_providers(tmp_path / "providers.yaml", {
        "shared": {"kind": "openai", "base_url": "http://shared.example/v1/", "model": "file-model"},
        "unused": {"kind": "openai", "base_url": "http://unused.example/v1", "model": "m"},
    })
    data = spec_data(provider="shared")
    spec = parse_spec(data, providers_file=file)
    assert spec.providers["shared"].base_url == "http://shared.example/v1"
    assert spec.providers["shared"].model == "file-model"
    assert "unused" not in spec.providers  # only what the steps name travels with the spec


def test_a_spec_cannot_redeclare_a_provider_of_the_file(tmp_path: Path) -> None:
    """Else a workflow could point the operator's provider, and the key the file gives it, elsewhere."""
    file = write_providers(tmp_path / "providers.yaml", {
        "fake": {"kind": "openai", "base_url": "http://from-file.example/v1", "model": "file-model",
                 "api_key_env": "OPENAI_API_KEY"},
    })
    errors = errors_of(spec_data(base_url="http://evil.example/v1"), providers_file=file)
    assert errors == [f"providers.fake: 'fake' is declared in the providers file ({file}); a workflow may not"
                      " redeclare it: remove it here to use the file's"]
    # The file's own declaration, as a stored spec carries it, is no redeclaration.
    spec = parse_spec(spec_data(provider="fake") | {"providers": {}}, providers_file=file)
    again = spec.model_dump(mode="json", by_alias=True)
    assert parse_spec(again, providers_file=file).providers["fake"].base_url == "http://from-file.example/v1"


def test_a_provider_declared_in_a_spec_names_no_secret(tmp_path: Path) -> None:
    file = write_providers(tmp_path / "providers.yaml", {
        "openai": {"kind": "openai", "base_url": "https://api.openai.example/v1", "api_key_env": "OPENAI_API_KEY"},
    })
    data = spec_data(base_url="http://evil.example/v1")
    data["providers"]["fake"] |= {"api_key_env": "OPENAI_API_KEY", "allow_secrets": ["AWS_SECRET_ACCESS_KEY"]}
    assert errors_of(data, providers_file=file) == [
        "providers.fake.api_key_env: 'OPENAI_API_KEY': a provider declared in a workflow may name no secret;"
        f" the operator declares providers with keys in {file}",
        f"providers.fake.allow_secrets: only the providers file ({file}) allows secrets",
    ]


def test_a_provider_declared_in_a_spec_allows_itself_loopback_only_unless_the_file_lets_it(tmp_path: Path) -> None:
    data = spec_data()
    data["providers"]["fake"]["allow_hosts"] = ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "db.internal"]
    file = write_providers(tmp_path / "providers.yaml", {})
    assert errors_of(data, providers_file=file) == [
        f"providers.fake.allow_hosts[{i}]: {host!r} is not among the hosts the providers file ({file}) lets"
        " workflows allow (workflow_allow_hosts); declare the provider in that file, or ask its operator to list"
        " the host there"
        for i, host in ((3, "169.254.169.254"), (4, "db.internal"))
    ]
    file.write_text(yaml.safe_dump({"workflow_allow_hosts": ["db.internal"], "providers": {}}))
    assert len(errors_of(data, providers_file=file)) == 1  # the metadata address stays refused
    data["providers"]["fake"]["allow_hosts"].remove("169.254.169.254")
    assert parse_spec(data, providers_file=file).providers["fake"].allow_hosts[-1] == "db.internal"


def test_a_broken_providers_file_is_reported(tmp_path: Path) -> None:
    file = write_providers(tmp_path / "providers.yaml", {"shared": {"kind": "openai", "base_url": "ftp://x"}})
    errors = errors_of(spec_data(provider="shared"), providers_file=file)
    assert len(errors) == 2
    assert errors[0].startswith(f"providers: {file}: providers.shared.base_url:")
    assert "'ftp://x' is not an http(s) URL" in errors[0]
    assert errors[1].startswith("steps[0].params.provider: unknown provider 'shared'")


# replies: parse() --------------------------------------------------------------------------------
@pytest.fixture
def llm() -> Llm:
    return Llm(LlmParams.model_validate(spec_data()["steps"][0]["params"]), "profile")


def reply(content: Any, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) or content is None else json.dumps(content)
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message},
                         "finish_reason": finish_reason}]}


GOOD = {"industry": "software", "pitch": "Makes tools.", "employees": 12, "b2b": True, "score": 0.5}


def invalid(llm: Llm, body: Any) -> str:
    with pytest.raises(InvalidReply) as info:
        llm.parse(body)
    return str(info.value)


def test_a_valid_reply_gives_typed_values(llm: Llm) -> None:
    assert llm.parse(reply(GOOD)) == GOOD


def test_the_prefix_starts_every_added_name() -> None:
    params = LlmParams.model_validate({**spec_data()["steps"][0]["params"], "prefix": "ai_"})
    augmenter = Llm(params, "profile")
    assert augmenter.parse(reply(GOOD)) == {f"ai_{k}": v for k, v in GOOD.items()}
    assert list(augmenter.outputs()) == [f"ai_{k}" for k in OUTPUTS]


def test_an_integer_written_as_a_whole_float_is_accepted(llm: Llm) -> None:
    values = llm.parse(reply({**GOOD, "employees": 3.0, "score": 2}))
    assert values["employees"] == 3 and type(values["employees"]) is int
    assert values["score"] == 2  # a number may be written without a fraction


def test_a_truncated_reply_says_it_was_cut_off(llm: Llm) -> None:
    text = json.dumps(GOOD)[:30]
    message = invalid(llm, reply(text, finish_reason="length"))
    assert message.startswith("the reply is not valid JSON: ")
    assert "(the reply was cut off: raise max_tokens)" in message
    assert "cut off" not in invalid(llm, reply(text))  # not when the model stopped by itself


@pytest.mark.parametrize(("change", "expected"), [
    ({"employees": "12"}, "employees: Input should be a valid integer"),
    ({"employees": 3.5}, "employees: Input should be a valid integer"),
    ({"b2b": 1}, "b2b: Input should be a valid boolean"),
    ({"score": "high"}, "score"),
    ({"pitch": 5}, "pitch: Input should be a valid string"),
    ({"industry": "mining"}, "industry: Input should be 'software', 'retail', 'finance' or 'other'"),
    ({"extra": "x"}, "extra: Extra inputs are not permitted"),
])
def test_a_reply_breaking_the_schema_says_where(llm: Llm, change: dict[str, Any], expected: str) -> None:
    message = invalid(llm, reply({**GOOD, **change}))
    assert message.startswith("the reply does not match the output schema: ")
    assert expected in message


def test_a_missing_field_is_named(llm: Llm) -> None:
    body = {k: v for k, v in GOOD.items() if k != "pitch"}
    assert "pitch: Field required" in invalid(llm, reply(body))


def test_a_reply_that_is_not_an_object(llm: Llm) -> None:
    assert invalid(llm, reply([GOOD])).startswith("the reply does not match the output schema: ")


def test_a_refusal_is_invalid_with_its_words(llm: Llm) -> None:
    assert (
        invalid(llm, reply(None, refusal="I cannot help with that.")) == "the model refused: I cannot help with that."
    )


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{}]}, None, "text"])
def test_a_reply_without_a_message(llm: Llm, body: Any) -> None:
    assert invalid(llm, body) == "the reply has no choices[0].message"


def test_a_message_without_text(llm: Llm) -> None:
    assert invalid(llm, reply(None)) == "the reply's message has no text content"


# end to end on the online path -------------------------------------------------------------------
FAKE_PROVIDER = {"api_key": SECRET, "retry_after_s": 0.1}  # the `fake` server of tests/conftest.py


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def keyed_spec(data: dict[str, Any], key_env: str) -> Any:
    """The spec with its provider, given a key, moved to a providers file: only the operator's
    providers may name a secret."""
    providers = data.pop("providers")
    providers["fake"]["api_key_env"] = key_env
    with tempfile.TemporaryDirectory() as folder:
        return parse_spec(data, providers_file=write_providers(Path(folder) / "providers.yaml", providers))


def online_spec(fake: FakeOpenAI, **step_params: Any) -> Any:
    return keyed_spec(spec_data(fake.base_url, **step_params), KEY_ENV)


def workflow(spec: Any, budget: LocalBudget | None = None, settings: Settings | None = None,
             run_id: str = "run-unit-1") -> InProcessEngine:
    context = RunContext(providers=spec.providers, run_id=run_id, budget=budget or LocalBudget(), settings=settings)
    return InProcessEngine(spec, context)


def record(i: int, note: str = "") -> dict[str, str]:
    return {"id": f"R{i:03d}", "name": f"Company {i}", "note": note}


def provenance(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["profile_provenance"])


def test_records_are_augmented_with_typed_outputs_status_and_provenance(fake: FakeOpenAI) -> None:
    spec = online_spec(fake)
    budget = LocalBudget()
    records = [record(i, note=f"plain {i}") for i in range(6)]
    result = workflow(spec, budget).augment(records)
    assert result.invalid == []
    assert [r["id"] for r in result.records] == [r["id"] for r in records]  # count and order kept
    hashes = set()
    for row in result.records:
        assert row["profile_status"] == "ok" and row["profile_error"] is None
        assert row["industry"] in ("software", "retail", "finance", "other")
        assert isinstance(row["pitch"], str) and row["pitch"]
        assert type(row["employees"]) is int and type(row["b2b"]) is bool and type(row["score"]) is float
        p = provenance(row)
        assert p["augmenter"] == "llm" and p["step"] == "profile" and p["provider"] == "fake"
        assert p["model"] == "fake-small" and p["run_id"] == "run-unit-1"
        assert p["cache_hit"] is False and p["attempts"] == 1
        assert p["tokens_in"] > 0 and p["tokens_out"] > 0 and p["latency_ms"] > 0
        assert p["cost_usd"] == pytest.approx(
            (p["tokens_in"] * PRICES["input_per_million"] + p["tokens_out"] * PRICES["output_per_million"]) / 1e6,
            abs=1e-8)
        assert re.fullmatch(r"[0-9a-f]{12}", p["template_hash"])
        hashes.add(p["template_hash"])
    assert len(hashes) == 1  # one template for every record
    stats = fake.stats()
    assert stats["by_status"].get("200") == 6
    summary = budget.ledger.summary()
    step = summary["steps"]["profile"]
    assert step["calls"] == 6 and step["failed"] == 0 and step["skipped"] == 0
    assert step["tokens_in"] == sum(provenance(r)["tokens_in"] for r in result.records)
    assert step["tokens_out"] == sum(provenance(r)["tokens_out"] for r in result.records)
    assert summary["total_usd"] == pytest.approx(sum(provenance(r)["cost_usd"] for r in result.records), abs=1e-6)


@pytest.mark.parametrize("interactive", [False, True])
def test_calls_someone_waits_for_go_ahead_in_the_limiters_queue(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, interactive: bool
) -> None:
    asked: list[bool] = []
    acquire = LocalPermits.acquire

    async def recording(self: LocalPermits, *args: Any, urgent: bool = False, **kwargs: Any) -> Any:
        asked.append(urgent)
        return await acquire(self, *args, urgent=urgent, **kwargs)

    monkeypatch.setattr(LocalPermits, "acquire", recording)
    spec = online_spec(fake)
    context = RunContext(providers=spec.providers, interactive=interactive)
    result = InProcessEngine(spec, context).augment([record(i, note=f"urgent {i}") for i in range(3)])
    assert {row["profile_status"] for row in result.records} == {"ok"}
    assert asked == [interactive] * 3


def test_the_same_record_gets_the_same_answer(fake: FakeOpenAI) -> None:
    spec = online_spec(fake)
    first = workflow(spec).augment([record(1, "same")]).records[0]
    second = workflow(spec).augment([record(1, "same")]).records[0]
    assert {k: first[k] for k in OUTPUTS} == {k: second[k] for k in OUTPUTS}


def test_faults_end_as_values_or_errors_and_no_record_is_dropped(fake: FakeOpenAI) -> None:
    fake.reset()
    spec = online_spec(fake, invalid_retries=1)
    records = [
        record(1, "fine"),
        record(2, "off once #badschemax1"),
        record(3, "always off #badschemax5"),
        record(4, "refused #400"),
        record(5, "busy #429x1"),
        record(6, "flaky #500x1"),
        {"id": "R007", "note": "no name"},  # invalid: never reaches the provider
    ]
    result = workflow(spec).augment(records)
    assert len(result.records) + len(result.invalid) == len(records)
    assert [i["index"] for i in result.invalid] == [6]
    rows = {r["id"]: r for r in result.records}
    assert len(rows) == 6

    assert rows["R001"]["profile_status"] == "ok" and provenance(rows["R001"])["attempts"] == 1

    off_once = rows["R002"]
    assert off_once["profile_status"] == "ok" and off_once["profile_error"] is None
    assert provenance(off_once)["attempts"] == 2  # the invalid reply was asked again
    assert off_once["industry"] is not None

    always_off = rows["R003"]
    assert always_off["profile_status"] == "error"
    assert always_off["profile_error"].startswith(
        "invalid reply after 2 tries: the reply does not match the output schema: industry:")
    assert all(always_off[k] is None for k in OUTPUTS)  # no half-valid values
    assert provenance(always_off)["attempts"] == 2
    assert provenance(always_off)["tokens_out"] > 0  # the invalid replies were billed...
    assert provenance(always_off)["cost_usd"] > 0  # ...and counted

    refused = rows["R004"]
    assert refused["profile_status"] == "error"
    assert refused["profile_error"] == "HTTP 400: bad request: marker #400"
    assert all(refused[k] is None for k in OUTPUTS)
    assert provenance(refused)["attempts"] == 1 and provenance(refused)["cost_usd"] == 0

    assert rows["R005"]["profile_status"] == "ok" and provenance(rows["R005"])["attempts"] == 2
    assert rows["R006"]["profile_status"] == "ok" and provenance(rows["R006"])["attempts"] == 2


def test_a_budget_skips_what_it_cannot_pay_for(fake: FakeOpenAI) -> None:
    spec = online_spec(fake, max_tokens=1000)
    # Each call reserves (prompt + 1000 tokens out) at the prices: about $0.0006; $0.002 pays for 3.
    budget = LocalBudget(max_usd=0.002)
    records = [record(i, f"budget {i}") for i in range(8)]
    result = workflow(spec, budget).augment(records)
    assert len(result.records) == 8
    statuses = [r["profile_status"] for r in result.records]
    assert statuses.count("ok") == 3 and statuses.count("skipped") == 5
    for row in result.records:
        if row["profile_status"] == "skipped":
            assert row["profile_error"] == "skipped: budget" and row["industry"] is None
    summary = budget.ledger.summary()
    assert summary["budget_exhausted"] is True and summary["total_usd"] <= 0.002
    assert summary["steps"]["profile"]["skipped"] == 5


def test_a_cached_result_is_served_without_a_call(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cache.db'}", cache_backend="database")
    spec = online_spec(fake)
    records = [record(i, f"cache me {i}") for i in range(3)]
    first = workflow(spec, settings=settings).augment(records).records
    fake.reset()
    budget = LocalBudget()
    second = workflow(spec, budget=budget, settings=settings, run_id="run-unit-2").augment(records).records
    assert fake.stats()["requests"] == 0
    for a, b in zip(first, second):
        assert {k: a[k] for k in OUTPUTS} == {k: b[k] for k in OUTPUTS}
        p = provenance(b)
        assert b["profile_status"] == "ok" and p["cache_hit"] is True and p["attempts"] == 0
        assert p["run_id"] == "run-unit-2" and p["cost_usd"] == 0
    assert budget.ledger.summary()["steps"]["profile"]["cache_hits"] == 3
    # Nothing of the key in the cache either.
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("select key, value from inference_cache")).all()
    engine.dispose()
    assert len(stored) == 3 and SECRET not in repr(stored)


def test_an_error_is_not_cached(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cache.db'}", cache_backend="database")
    spec = online_spec(fake)
    row = workflow(spec, settings=settings).augment([record(1, "first try fails #500x3")]).records[0]
    assert row["profile_status"] == "error"
    assert row["profile_error"].startswith("gave up after 3 attempts; last: HTTP 500")
    again = workflow(spec, settings=settings).augment([record(1, "first try fails #500x3")]).records[0]
    assert again["profile_status"] == "ok" and provenance(again)["cache_hit"] is False


# the key -----------------------------------------------------------------------------------------
def test_the_api_key_never_shows(fake: FakeOpenAI, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = online_spec(fake)
    assert SECRET not in spec.model_dump_json()  # the spec names the variable only
    result = workflow(spec).augment([record(1, "key check"), record(2, "key check #400"),
                                     record(3, "key check #badschemax9")])
    assert [r["profile_status"] for r in result.records] == ["ok", "error", "error"]
    assert SECRET not in json.dumps(result.records, default=str)
    # What previews show of the requests.
    chain = setup_chain(build_chain(spec), RunContext(providers=spec.providers))
    table = pa.table({"name": ["Acme"], "note": ["x"]})
    _, requests = dry_chain(chain, table)
    shown = requests["profile"][0].public()
    assert shown["headers"] == {"Authorization": "***"}
    assert SECRET not in json.dumps(shown)
    # A wrong key: the provider's 401, without the key.
    wrong = keyed_spec(spec_data(fake.base_url), "AUGMENT_TEST_WRONG_KEY")
    monkeypatch.setenv("AUGMENT_TEST_WRONG_KEY", SECRET + "-wrong")
    row = workflow(wrong).augment([record(4, "wrong key")]).records[0]
    assert row["profile_status"] == "error" and row["profile_error"] == "HTTP 401: Incorrect API key provided."
    assert SECRET not in json.dumps(row, default=str)
    out = capsys.readouterr()
    assert SECRET not in out.out and SECRET not in out.err


def test_a_missing_key_stops_the_workflow_before_any_record(fake: FakeOpenAI,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = online_spec(fake)
    monkeypatch.delenv(KEY_ENV)
    fake.reset()
    with pytest.raises(StepError, match=f"environment variable\\(s\\) {KEY_ENV} are not set"):
        workflow(spec)
    assert fake.stats()["requests"] == 0


def test_a_key_gone_after_setup_is_each_records_error_naming_the_variable(fake: FakeOpenAI,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ready = workflow(online_spec(fake))
    monkeypatch.delenv(KEY_ENV)
    fake.reset()
    result = ready.augment([record(1, "a"), record(2, "b")])
    for row in result.records:
        assert row["profile_status"] == "error"
        assert row["profile_error"] == f"cannot build the request: environment variable {KEY_ENV} is not set"
        assert provenance(row)["attempts"] == 0
    assert fake.stats()["requests"] == 0


def test_the_request_is_what_the_spec_says(fake: FakeOpenAI) -> None:
    spec = online_spec(fake, temperature=0.2)
    chain = setup_chain(build_chain(spec), RunContext(providers=spec.providers))
    _, requests = dry_chain(chain, pa.table({"name": ["Acme"], "note": [None]}))
    request = requests["profile"][0]
    assert request.method == "POST" and request.url == f"{fake.base_url}/chat/completions"
    body = request.json
    assert body["model"] == "fake-small" and body["max_tokens"] == 100 and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "You profile companies. Answer in JSON."},
        {"role": "user", "content": "Company: Acme\nNote: "},  # a null renders empty
    ]
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["required"] == list(OUTPUTS) and schema["additionalProperties"] is False
    assert schema["properties"]["industry"]["enum"] == OUTPUTS["industry"]["enum"]
    assert schema["properties"]["employees"] == {"type": "integer"}
