"""The span trees of an online call and of a run, read from an in-memory exporter (no Ray).

What is covered where:
- here, online: an API request through the app (TestClient) into the in-process engine with an llm
  step against the fake provider: request -> augment.augment -> augment.step.batch ->
  augment.provider_call, one trace, the caller's traceparent continued;
- here, a run: the run coordinator driven in-process (tests/unit/actors' way), its steps started
  and finished as `_drive` does, and the chain run as a Ray Data worker runs it, parented only by
  the traceparents its RunContext carries (as after pickling into another process):
  caller -> augment.run -> augment.step -> augment.step.batch -> augment.provider_call;
- tests/integration/test_run_telemetry.py: the spans a real run's coordinator and Ray Data actors
  export over OTLP (RunContext.trace pickled into them, the per-batch flush), received by a
  collector in the test from a cluster started with the OTEL_* variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.run_coordinator import RunCoordinator
from augment_core import tracing
from augment_core.settings import Settings
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.augmenters.registry import build_chain
from pipelines.engine.chain import output_schema, run_chain, setup_chain
from pipelines.inference.context import RunContext
from pipelines.workflows.loader import parse_spec
from tests.conftest import api_client
from tests.unit.serve_apps.test_api_inference import PROFILE

FAKE_PROVIDER = {"retry_after_s": 0.1}
SECRET_FREE = ("Bearer", "Company:", "Acme", "Globex")  # never in an attribute: keys, prompts, records


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use_exporter(exporter)
    yield exporter
    tracing.use_exporter(None)


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def parent_of(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    [parent] = [s for s in finished if s.context.span_id == span.parent.span_id]
    return parent


def assert_no_content(finished: tuple[ReadableSpan, ...]) -> None:
    for span in finished:
        for value in (span.attributes or {}).values():
            assert not any(word in str(value) for word in SECRET_FREE), (span.name, value)


def test_an_online_call_is_one_trace_from_the_request_to_each_provider_call(
        spans: InMemorySpanExporter, fake: FakeOpenAI, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "profile.yaml").write_text(PROFILE.format(base_url=fake.base_url), encoding="utf-8")
    settings = Settings(storage_root=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        workflows_dir=str(folder), cache_backend="off")
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with api_client(settings) as client:
        response = client.post("/v1/workflows/profile/augment", headers={"traceparent": caller},
                               json={"records": [{"id": "1", "name": "Acme", "employees": "120"},
                                                 {"id": "2", "name": "Globex"}, {"name": "no id"}]})
    assert response.status_code == 200, response.text

    finished = spans.get_finished_spans()
    [request] = by_name(finished, "POST /v1/workflows/{name}/augment")
    [augment] = by_name(finished, "augment.augment")
    [step] = by_name(finished, "augment.step.batch")
    calls = by_name(finished, "augment.provider_call")
    assert len(calls) == 2
    assert {s.context.trace_id for s in (request, augment, step, *calls)} == {0x0af7651916cd43dd8448eb211c80319c}
    assert request.parent is not None and request.parent.span_id == 0xb7ad6b7169203331  # the caller's span
    assert request.kind == trace.SpanKind.SERVER
    assert parent_of(augment, finished) is request
    assert parent_of(step, finished) is augment
    assert all(parent_of(call, finished) is step for call in calls)
    assert request.attributes["http.route"] == "/v1/workflows/{name}/augment"
    assert request.attributes["http.response.status_code"] == 200
    assert dict(augment.attributes) == {
        "augment.workflow": "profile", "augment.workflow.version": 3, "augment.records.in": 3,
        "augment.records.valid": 2, "augment.records.quarantined": 1}
    assert step.attributes["augment.step"] == "prof" and step.attributes["augment.records.rows"] == 2
    assert step.attributes["augment.records.failed"] == 0
    for call in calls:
        assert call.attributes["augment.provider"] == "fake" and call.attributes["augment.model"] == "fake-small"
        assert call.attributes["augment.provider.account"] == "fake"
        assert call.attributes["augment.outcome"] == "ok" and call.attributes["augment.provider.attempts"] == 1
        assert call.attributes["augment.provider.tokens_in"] > 0
    assert_no_content(finished)


def test_a_request_refused_is_traced_with_its_status(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    settings = Settings(storage_root=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        workflows_dir=str(tmp_path))
    with api_client(settings) as client:
        assert client.post("/v1/workflows/nope/augment", json={"records": [{}]}).status_code == 404
    [request] = spans.get_finished_spans()
    assert request.name == "POST /v1/workflows/{name}/augment"
    assert request.attributes["http.response.status_code"] == 404


SPEC = """\
name: profile
version: 3
providers:
  fake:
    kind: openai
    base_url: {base_url}
    allow_hosts: [127.0.0.1]
    model: fake-small
    max_retries: 0
    timeout_seconds: 10
source: {{kind: csv, path: in.csv}}
schema:
  key: id
  fields:
    id: {{type: string, required: true}}
    name: {{type: string, required: true}}
steps:
  - use: llm
    name: prof
    params:
      provider: fake
      user: "Company: {{{{name}}}}"
      outputs:
        industry: {{enum: [software, retail, finance, other]}}
sink: {{dataset: profiles}}
"""


def test_a_run_is_one_trace_from_its_caller_through_its_steps_to_the_workers_calls(
        spans: InMemorySpanExporter, fake: FakeOpenAI, tmp_path: Path) -> None:
    import yaml

    settings = Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        cache_backend="off", heartbeat_seconds=0.05)
    spec = parse_spec(yaml.safe_load(SPEC.format(base_url=fake.base_url)))
    open_store(settings).create_run("r1", spec.name, spec.version, "/p.yaml", spec.run_step_names())
    with tracing.span("caller") as caller:  # `augment run`, or the API's launch request
        coordinator = RunCoordinator(settings, "r1", spec, traceparent=tracing.traceparent())
    records = pa.table({"record_uuid": ["u1", "u2", "u3"], "id": ["1", "2", "3"],
                        "name": ["Acme", "Globex #500x5", "Initech"]})

    def drive(actor: RunCoordinator) -> tuple[str, dict[str, Any]]:
        actor._start("validate")
        actor.report("validate", 4)
        actor._finish("validate")
        for name in [*spec.step_names(), "write"]:
            actor._start(name)
        # A worker: another process, which knows the run only by the traceparents in its context.
        worker = RunContext(providers=spec.providers, run_id="r1", trace=dict(actor.trace.parents))
        out = run_chain(setup_chain(build_chain(spec), worker), records, output_schema(spec), context=worker)
        assert out["prof_status"].to_pylist() == ["ok", "error", "ok"]
        for name in [*spec.step_names(), "write"]:
            actor._finish(name)
        actor.steps["prof"].failed = 1
        return "succeeded", {"counts": {"in": 4, "valid": 3, "quarantined": 1, "augmented": 2, "failed": 1,
                                        "skipped": 0}}

    coordinator._drive = lambda: drive(coordinator)  # type: ignore[method-assign]
    assert coordinator.execute() == "succeeded"

    finished = spans.get_finished_spans()
    [run] = by_name(finished, "augment.run")
    steps = {s.attributes["augment.step"]: s for s in by_name(finished, "augment.step")}
    [batch] = by_name(finished, "augment.step.batch")
    calls = by_name(finished, "augment.provider_call")
    assert len({s.context.trace_id for s in finished}) == 1
    assert parent_of(run, finished).context.span_id == caller.get_span_context().span_id
    assert set(steps) == {"validate", "prof", "write"}
    assert all(parent_of(s, finished) is run for s in steps.values())
    assert parent_of(batch, finished) is steps["prof"]
    assert len(calls) == 3 and all(parent_of(c, finished) is batch for c in calls)
    assert run.attributes["augment.run_id"] == "r1" and run.attributes["augment.workflow"] == "profile"
    assert run.attributes["augment.run.status"] == "succeeded"
    assert {k: v for k, v in run.attributes.items() if k.startswith("augment.records.")} == {
        "augment.records.in": 4, "augment.records.valid": 3, "augment.records.quarantined": 1,
        "augment.records.augmented": 2, "augment.records.failed": 1, "augment.records.skipped": 0}
    assert steps["validate"].attributes["augment.records.rows"] == 4
    assert steps["prof"].attributes["augment.step.state"] == "succeeded"
    assert steps["prof"].attributes["augment.records.failed"] == 1
    assert steps["validate"].end_time <= steps["prof"].start_time  # ended when it finished, not at the run's end
    assert batch.attributes["augment.run_id"] == "r1" and batch.attributes["augment.records.failed"] == 1
    outcomes = sorted(c.attributes["augment.outcome"] for c in calls)
    assert outcomes == ["error", "ok", "ok"]
    [failed] = [c for c in calls if c.attributes["augment.outcome"] == "error"]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert_no_content(finished)


def test_tracing_is_off_unless_the_standard_variables_ask() -> None:
    assert not tracing.tracing_requested({})
    assert tracing.tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                          "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.tracing_requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
