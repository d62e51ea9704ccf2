"""Human review: the policy in the spec, the queue a run fills, every action, decisions that later
augmentation keeps (no provider call for a fully decided record), promote, the API and the CLI.

Runs are simulated without Ray: the online path augments the records (the same chain a batch run
uses) and the result is written and catalogued as a run would; the batch path is covered by
tests/integration/test_review_runs.py. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from augment_cli.main import main as cli
from augment_core.events import open_bus
from augment_core.reviews import ReviewConflict, get_item, list_items
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.engine.chain import output_schema
from pipelines.engine.inprocess import InProcessEngine
from pipelines.inference.context import RunContext
from pipelines.operations import review_actions
from pipelines.operations.promote import promote
from pipelines.review.decisions import DecisionLookup
from pipelines.review.enqueue import enqueue
from pipelines.spec.errors import SpecError
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.folder import WorkflowFolder
from pipelines.workflows.loader import load_spec, parse_spec
from tests.conftest import api_client

OUTPUTS = {"industry": {"enum": ["software", "retail", "finance", "other"]}, "b2b": {"type": "boolean"},
           "headcount": {"type": "integer"}}


def spec_data(name: str, base_url: str = "http://127.0.0.1:9/v1", review: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "providers": {
            "fake": {
                "kind": "openai",
                "base_url": base_url,
                "allow_hosts": ["127.0.0.1"],
                "model": "fake-small",
                "max_retries": 1,
                "timeout_seconds": 10,
                "account": f"acct_{name}",
            }
        },
        "source": {"kind": "csv", "path": "in.csv"},
        "schema": {
            "key": "id",
            "fields": {
                "id": {"type": "string", "required": True},
                "name": {"type": "string"},
                "note": {"type": "string"},
                "conf": {"type": "float"},
            },
        },
        "steps": [
            {
                "use": "llm",
                "name": "prof",
                "params": {
                    "provider": "fake",
                    "user": "Company: {{name}} {{note}}",
                    "outputs": OUTPUTS,
                    "invalid_retries": 0,
                },
            },
            {
                "use": "derive",
                "name": "confidence",
                "params": {"column": "score", "expression": "conf", "type": "float"},
            },
            {"use": "derive", "name": "slug", "params": {"column": "slug", "expression": "lower(name)"}},
        ],
        "sink": {"dataset": name},
    }
    if review is not None:
        data["review"] = review
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return caught.value.errors


# the policy ----------------------------------------------------------------------------------------
def test_review_is_off_by_default_and_takes_all_or_rules() -> None:
    assert parse_spec(spec_data("p")).review.policy == "none"
    assert parse_spec(spec_data("p", review="all")).review.policy == "all"
    review = parse_spec(spec_data("p", review={"rules": [{"field": "score", "below": 0.7}, {"step": "prof"},
                                                         {"step": "prof", "failed": True},
                                                         {"field": "industry", "regex": "software|retail"},
                                                         {"field": "slug", "non_empty": True}],
                                               "fields": ["industry"]})).review
    assert review.policy == "rules" and len(review.rules) == 5 and review.fields == ["industry"]


@pytest.mark.parametrize(("review", "expected"), [
    ({"rules": [{"field": "nope", "below": 0.5}]},
     "review.rules[0].field: 'nope' is not a field of the schema or a column a step adds"),
    ({"rules": [{"field": "score", "below": 0.5}, {"step": "ghost"}]},
     "review.rules[1].step: unknown step 'ghost' (steps: prof, confidence, slug)"),
    ({"rules": [{"field": "industry", "below": 0.5}]},
     "review.rules[0].below: 'industry' is string, below compares numbers"),
    ({"rules": [{"field": "headcount", "regex": "1+"}]},
     "review.rules[0].regex: 'headcount' is int64, regex checks strings"),
    ({"rules": [{"step": "slug", "failed": True}]},
     "review.rules[0].failed: step 'slug' (derive) cannot fail per record"),
    ({"policy": "all", "fields": ["industry", "name"]},
     "review.fields[1]: 'name' is not an output of a step (outputs: b2b, headcount, industry, score, slug)"),
    ({"rules": [{"field": "score", "step": "prof"}]}, "review.rules[0]: a rule names either a field or a step"),
    ({"rules": [{"field": "score", "below": 1, "non_empty": True}]},
     "review.rules[0]: a field rule takes exactly one of below, regex, non_empty"),
    ({"rules": [{"step": "prof", "below": 1}]}, "review.rules[0]: a step rule takes no below: those check a field"),
    ({"rules": [{"field": "slug", "regex": "("}]},
     "review.rules[0].regex: invalid regular expression: missing ), unterminated subpattern at position 0"),
    ({"policy": "rules"}, "review: policy rules needs at least one rule"),
    ({"policy": "all", "rules": [{"step": "prof"}]}, "review: rules apply to policy rules, not all"),
    ({"rules": [{"field": "score", "above": 1}]}, "review.rules[0].above: unknown key"),
    ("some", "review.policy: Input should be 'none', 'all' or 'rules'"),
])
def test_a_bad_policy_is_refused_with_its_path(review: Any, expected: str) -> None:
    assert expected in errors_of(spec_data("p", review=review))


# a simulated run: the online chain, written and catalogued as a run writes it ----------------------------
FAKE_PROVIDER = {"retry_after_s": 0.1}  # the `fake` server of tests/conftest.py


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'a.db'}"
    (tmp_path / "wf").mkdir()
    return Settings(storage_root=str(tmp_path / "data"), database_url=url, workflows_dir=str(tmp_path / "wf"))


def make_spec(settings: Settings, fake: FakeOpenAI, review: Any, tag: str = "rv") -> WorkflowSpec:
    name = f"{tag}_{uuid.uuid4().hex[:8]}"
    path = Path(settings.workflows_dir) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec_data(name, fake.base_url, review)), encoding="utf-8")
    return load_spec(path)


def records(n: int, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{"id": f"r{i}", "name": f"Company {i}", "note": f"note {i}", "conf": round(0.1 * i, 2)} for i in range(n)]
    for i, change in overrides.items():
        out[int(i[1:])].update(change)
    return out


def simulate_run(settings: Settings, spec: WorkflowSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Augment, write two files, catalogue and enqueue, as the run coordinator does."""
    run_id = uuid.uuid4().hex[:20]
    online = InProcessEngine(spec, RunContext(providers=spec.providers, settings=settings, run_id=run_id,
                                              decisions=DecisionLookup(settings, spec.name)))
    result = online.augment(rows)
    assert not result.invalid, result.invalid
    table = pa.Table.from_pylist(result.records, schema=output_schema(spec))
    paths = StoragePaths(settings)
    path = paths.dataset_run(spec.sink.dataset, run_id)
    Path(path).mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), f"{path}/a.parquet")
    pq.write_table(table.slice(half), f"{path}/b.parquet")
    store = open_store(settings)
    version = store.next_dataset_version(spec.sink.dataset)
    store.add_dataset_version(spec.sink.dataset, version, path, {f.name: str(f.type) for f in table.schema},
                              table.num_rows, run_id)
    output = {"dataset": spec.sink.dataset, "version": version, "path": path}
    output["review_items"] = enqueue(settings, spec, run_id, output)
    output["run_id"] = run_id
    return output


def items_of(settings: Settings, **filters: Any) -> list[Any]:
    return list_items(open_store(settings), limit=1000, **filters)[0]


def by_record(items: list[Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in items:
        out.setdefault(item.record_uuid, set()).add(item.field)
    return out


def uuids(settings: Settings, output: dict[str, Any]) -> dict[str, str]:
    """id -> record_uuid of a written version."""
    table = pq.read_table(output["path"], columns=["id", "record_uuid"])
    return dict(zip(table["id"].to_pylist(), table["record_uuid"].to_pylist()))


# enqueue by each rule kind -------------------------------------------------------------------------
def test_policy_none_queues_nothing(settings: Settings, fake: FakeOpenAI) -> None:
    spec = make_spec(settings, fake, None)
    assert simulate_run(settings, spec, records(3))["review_items"] == 0


def test_all_queues_every_output_of_every_record_with_provenance(settings: Settings, fake: FakeOpenAI) -> None:
    spec = make_spec(settings, fake, "all")
    out = simulate_run(settings, spec, records(4))
    items = items_of(settings, dataset=spec.sink.dataset)
    assert out["review_items"] == len(items) == 4 * 5
    assert set(map(frozenset, by_record(items).values())) == {
        frozenset({"industry", "b2b", "headcount", "score", "slug"})
    }
    industry = next(i for i in items if i.field == "industry")
    assert industry.state == "pending" and industry.before is None and industry.reason == "policy all"
    assert industry.after in OUTPUTS["industry"]["enum"] and industry.run_id == out["run_id"]
    assert industry.provenance["augmenter"] == "llm" and industry.provenance["run_id"] == out["run_id"]
    assert next(i for i in items if i.field == "slug").provenance == {"augmenter": "derive", "step": "slug",
                                                                     "run_id": out["run_id"]}
    events = open_bus(settings).read(out["run_id"])
    assert [(e.type, e.data["items"]) for e in events] == [("review.created", 20)]


def test_a_confidence_rule_queues_the_concerned_steps_outputs_of_low_records(
        settings: Settings, fake: FakeOpenAI) -> None:
    spec = make_spec(settings, fake, {"rules": [{"field": "score", "below": 0.25}]})
    out = simulate_run(settings, spec, records(5))  # conf 0.0, 0.1, 0.2 are below; a null conf is not
    ids = uuids(settings, out)
    assert by_record(items_of(settings, run_id=out["run_id"])) == {ids[f"r{i}"]: {"score"} for i in range(3)}
    assert items_of(settings, run_id=out["run_id"])[0].reason == "score below 0.25"


def test_regex_and_non_empty_rules_queue_records_that_fail_them(settings: Settings, fake: FakeOpenAI) -> None:
    spec = make_spec(settings, fake, {"rules": [{"field": "slug", "regex": "company [0-2]"},
                                                {"field": "industry", "non_empty": True}],
                                      "fields": ["slug", "industry"]})
    out = simulate_run(settings, spec, records(4, r1={"note": "#400"}))  # prof fails on r1: no industry
    ids = uuids(settings, out)
    queued = by_record(items_of(settings, run_id=out["run_id"]))
    assert queued == {ids["r3"]: {"slug", "industry"}, ids["r1"]: {"slug", "industry"}}
    reasons = {(i.record_uuid, i.field): i.reason for i in items_of(settings, run_id=out["run_id"])}
    assert reasons[(ids["r3"], "slug")] == "slug does not match 'company [0-2]'"
    assert reasons[(ids["r1"], "industry")] == "industry is empty"


def test_step_rules_queue_a_steps_output_or_its_failures(settings: Settings, fake: FakeOpenAI) -> None:
    failed = make_spec(settings, fake, {"rules": [{"step": "prof", "failed": True}]})
    out = simulate_run(settings, failed, records(4, r2={"note": "#400"}))
    items = items_of(settings, run_id=out["run_id"])
    assert by_record(items) == {uuids(settings, out)["r2"]: {"industry", "b2b", "headcount"}}
    assert {i.after for i in items} == {None} and items[0].reason == "step prof failed"

    output = make_spec(settings, fake, {"rules": [{"step": "slug"}]})
    out = simulate_run(settings, output, records(3))
    assert {frozenset(f) for f in by_record(items_of(settings, run_id=out["run_id"])).values()} == {frozenset({"slug"})}
    assert out["review_items"] == 3


def test_a_later_run_records_the_before_value_and_replaces_stale_pending_items(
        settings: Settings, fake: FakeOpenAI) -> None:
    spec = make_spec(settings, fake, {"rules": [{"step": "slug"}]})
    first = simulate_run(settings, spec, records(2))
    second = simulate_run(settings, spec, records(2, r0={"name": "Renamed"}))
    ids = uuids(settings, second)
    items = {i.record_uuid: i for i in items_of(settings, dataset=spec.sink.dataset)}
    assert len(items) == 2 and {i.run_id for i in items.values()} == {second["run_id"]}  # first's pending replaced
    assert (items[ids["r0"]].before, items[ids["r0"]].after) == ("company 0", "renamed")
    assert first["review_items"] == second["review_items"] == 2


# actions ---------------------------------------------------------------------------------------------
def queued(settings: Settings, fake: FakeOpenAI, review: Any = "all", n: int = 3) -> tuple[WorkflowSpec, dict, dict]:
    spec = make_spec(settings, fake, review)
    out = simulate_run(settings, spec, records(n))
    items = {(i.record_uuid, i.field): i for i in items_of(settings, run_id=out["run_id"])}
    return spec, out, items


def test_accept_is_idempotent_and_publishes_one_event(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake)
    item = next(iter(items.values()))
    first = review_actions.accept(settings, item.id)
    again = review_actions.accept(settings, item.id)
    assert first.state == again.state == "accepted" and first.decided_value == item.after
    assert again.decided_at == first.decided_at
    accepted = [e for e in open_bus(settings).read(out["run_id"]) if e.type == "review.accepted"]
    assert len(accepted) == 1 and accepted[0].data == {"item": item.id, "record_uuid": item.record_uuid, "by": None,
                                                       "field": item.field}


def test_edit_checks_the_fields_type_and_keeps_the_value(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake)
    record = next(iter(items))[0]
    for field, value, reason in [
        ("headcount", "12", "headcount is int64: expected an integer, got str '12'"),
        ("headcount", 1.5, "headcount is int64: expected an integer, got float 1.5"),
        ("headcount", True, "headcount is int64: expected an integer, got bool True"),
        ("b2b", 1, "b2b is bool: expected true or false, got int 1"),
        ("industry", 3, "industry is string: expected a string, got int 3"),
        ("score", None, "score: null is not a value; reject the item to drop the proposed value"),
    ]:
        with pytest.raises(review_actions.InvalidValue) as caught:
            review_actions.edit(settings, items[(record, field)].id, value)
        assert str(caught.value) == reason
        assert get_item(open_store(settings), items[(record, field)].id).state == "pending"  # nothing lost
    edited = review_actions.edit(settings, items[(record, "headcount")].id, 42)
    assert (edited.state, edited.decided_value) == ("edited", 42)
    assert review_actions.edit(settings, items[(record, "score")].id, 1).decided_value == 1.0
    assert review_actions.edit(settings, items[(record, "headcount")].id, 42).decided_at == edited.decided_at


def test_a_decided_item_refuses_another_decision_until_rerun(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "slug"}]})
    item = next(iter(items.values()))
    review_actions.reject(settings, item.id, by="ana")
    assert review_actions.reject(settings, item.id).state == "rejected"  # the same again: no change
    refusal = f"review item {item.id} is already rejected by ana at [0-9-]+ [0-9:]+ UTC: rerun it to decide again"
    with pytest.raises(ReviewConflict, match=refusal):  # the second reviewer learns who decided
        review_actions.accept(settings, item.id, by="bo")
    review_actions.edit(settings, items[list(items)[1]].id, "mine")
    with pytest.raises(ReviewConflict, match="already edited at [0-9-]+ [0-9:]+ UTC \\(value 'mine'\\)"):
        review_actions.edit(settings, items[list(items)[1]].id, "other")
    with pytest.raises(KeyError, match="no review item 999999999"):
        review_actions.accept(settings, 999999999)


def test_rerun_augments_the_record_again_and_puts_it_back_to_pending(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "prof"}]}, n=2)
    item = next(i for i in items.values() if i.field == "industry")
    review_actions.edit(settings, item.id, "finance")
    calls = fake.stats()["requests"]
    catalog = WorkflowFolder(settings.workflows_dir, context_for=lambda s: RunContext(
        providers=s.providers, settings=settings, decisions=DecisionLookup(settings, s.name)))
    rerun = review_actions.rerun(settings, catalog, item.id)
    assert rerun.state == "pending" and rerun.decided_value is None and rerun.decided_at is None
    assert rerun.after in OUTPUTS["industry"]["enum"]
    assert rerun.provenance["augmenter"] == "llm" and rerun.provenance["cache_hit"] is False
    assert fake.stats()["requests"] == calls + 1  # a fresh call, not the run's cached answer
    assert "review.rerun" in [e.type for e in open_bus(settings).read(out["run_id"])]
    assert review_actions.accept(settings, item.id).state == "accepted"  # decidable again

    (Path(settings.workflows_dir) / f"{spec.name}.yaml").unlink()
    with pytest.raises(review_actions.RerunFailed, match=f"workflow '{spec.name}' is not in"):
        review_actions.rerun(settings, catalog, item.id)
    assert get_item(open_store(settings), item.id).state == "accepted"  # a failed rerun loses no decision


# decisions later augmentation keeps ----------------------------------------------------------------
def test_a_later_run_keeps_accepted_and_edited_values_and_calls_nothing_for_decided_records(
        settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "prof"}]}, n=3)
    ids = uuids(settings, out)
    r0, r1 = ids["r0"], ids["r1"]
    for field in ("industry", "b2b"):
        review_actions.accept(settings, items[(r0, field)].id)
    review_actions.edit(settings, items[(r0, "headcount")].id, 777)  # r0: every prof output decided
    review_actions.edit(settings, items[(r1, "industry")].id, "finance")  # r1: one output decided
    review_actions.reject(settings, items[(ids["r2"], "industry")].id)  # rejected: proposed anew

    fake.reset()
    # A changed prompt: the cache cannot answer, so every record that is sent is a call.
    changed = spec.model_copy(deep=True)
    changed.steps[0].params["user"] = "Company again: {{name}} {{note}}"
    second = simulate_run(settings, changed, records(3))
    assert fake.stats()["requests"] == 2  # r1 and r2; nothing for r0
    rows = {r["id"]: r for r in pq.read_table(second["path"]).to_pylist()}
    assert (rows["r0"]["industry"], rows["r0"]["b2b"], rows["r0"]["headcount"]) == (
        items[(r0, "industry")].after, items[(r0, "b2b")].after, 777)
    kept = json.loads(rows["r0"]["prof_provenance"])
    assert rows["r0"]["prof_status"] == "ok" and kept["attempts"] == 0 and kept["run_id"] == second["run_id"]
    assert kept["kept"] == {"industry": f"accepted in review {items[(r0, 'industry')].id}",
                            "b2b": f"accepted in review {items[(r0, 'b2b')].id}",
                            "headcount": f"edited in review {items[(r0, 'headcount')].id}"}
    assert rows["r1"]["industry"] == "finance"
    assert json.loads(rows["r1"]["prof_provenance"])["kept"] == {
        "industry": f"edited in review {items[(r1, 'industry')].id}"}
    assert json.loads(rows["r1"]["prof_provenance"])["attempts"] == 1
    # The second run asks only for what is not decided.
    assert by_record(items_of(settings, run_id=second["run_id"])) == {
        r1: {"b2b", "headcount"}, ids["r2"]: {"industry", "b2b", "headcount"}}


# promote ---------------------------------------------------------------------------------------------
def test_promote_applies_decisions_drops_rejected_values_and_keeps_every_record(
        settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "prof"}, {"step": "slug"}]}, n=4)
    ids = uuids(settings, out)
    review_actions.accept(settings, items[(ids["r0"], "industry")].id)
    review_actions.edit(settings, items[(ids["r1"], "slug")].id, "hand written")
    review_actions.edit(settings, items[(ids["r1"], "headcount")].id, 5)
    review_actions.reject(settings, items[(ids["r2"], "industry")].id)
    review_actions.reject(settings, items[(ids["r3"], "b2b")].id)
    before = pq.read_table(out["path"]).to_pylist()

    result = promote(settings, spec.sink.dataset)

    assert (result.from_version, result.version, result.rows) == (1, 2, 4)
    assert (result.applied, result.rejected, result.pending) == (3, 2, 4 * 4 - 5)
    rows = {r["id"]: r for r in pq.read_table(result.path).to_pylist()}
    old = {r["id"]: r for r in before}
    assert set(rows) == {"r0", "r1", "r2", "r3"}
    assert rows["r0"]["industry"] == old["r0"]["industry"]
    assert (rows["r1"]["slug"], rows["r1"]["headcount"]) == ("hand written", 5)
    assert rows["r2"]["industry"] is None and rows["r2"]["b2b"] == old["r2"]["b2b"]
    assert rows["r3"]["b2b"] is None and rows["r3"]["slug"] == old["r3"]["slug"]
    assert pq.read_table(out["path"]).to_pylist() == before  # the source version is untouched
    catalogued = open_store(settings).get_dataset_version(spec.sink.dataset, 2)
    assert catalogued.row_count == 4 and catalogued.path == result.path
    with pytest.raises(KeyError, match="has no version 9"):
        promote(settings, spec.sink.dataset, 9)


# API -------------------------------------------------------------------------------------------------
def test_the_api_lists_shows_and_acts_on_items(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "slug"}, {"field": "score", "below": 0.15}]}, n=3)
    client = api_client(settings, max_body_bytes=1024 * 1024)
    page = client.get("/v1/reviews", params={"dataset": spec.sink.dataset, "limit": 2, "offset": 1})
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 5 and len(body["items"]) == 2 and body["offset"] == 1
    slug = next(i for i in items.values() if i.field == "slug")
    score = next(i for i in items.values() if i.field == "score")
    assert client.get(f"/v1/reviews/{slug.id}").json()["after"] == slug.after
    assert client.get("/v1/reviews/999999999").status_code == 404
    assert client.post("/v1/reviews/999999999/accept").status_code == 404

    accepted = client.post(f"/v1/reviews/{slug.id}/accept")
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    assert client.post(f"/v1/reviews/{slug.id}/accept").json() == accepted.json()
    conflict = client.post(f"/v1/reviews/{slug.id}/reject")
    assert conflict.status_code == 409 and "already accepted" in conflict.json()["detail"]

    bad = client.post(f"/v1/reviews/{score.id}/edit", json={"value": "high"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == [{"loc": ["body", "value"], "path": "body.value", "type": "value_error",
                                     "msg": "score is double: expected a number, got str 'high'"}]
    missing = client.post(f"/v1/reviews/{score.id}/edit", json={"val": 1})
    assert missing.status_code == 422 and {d["path"] for d in missing.json()["detail"]} == {"body.val", "body.value"}
    edited = client.post(f"/v1/reviews/{score.id}/edit", json={"value": 0.9})
    assert edited.status_code == 200 and edited.json()["decided_value"] == 0.9

    other = next(i for i in items.values() if i.field == "slug" and i.id != slug.id)
    assert client.post(f"/v1/reviews/{other.id}/reject").json()["state"] == "rejected"
    rerun = client.post(f"/v1/reviews/{other.id}/rerun")
    assert rerun.status_code == 200 and rerun.json()["state"] == "pending"
    states = client.get("/v1/reviews", params={"run_id": out["run_id"], "state": "pending"}).json()
    assert states["total"] == 3
    assert client.get("/v1/reviews", params={"state": "maybe"}).status_code == 422


# CLI -------------------------------------------------------------------------------------------------
def test_the_cli_reviews_and_promotes(settings: Settings, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec, out, items = queued(settings, fake, {"rules": [{"step": "slug"}]}, n=2)
    for key, value in settings.exported().items():
        monkeypatch.setenv(key, value)
    first, second = sorted(items.values(), key=lambda i: i.id)
    assert cli(["review", "list", "--dataset", spec.sink.dataset]) == 0
    listing = capsys.readouterr().out
    assert str(first.id) in listing and "pending" in listing and json.dumps(first.after) in listing
    assert cli(["review", "edit", str(first.id), "hand made"]) == 0
    assert "review item" in capsys.readouterr().out
    assert cli(["review", "edit", str(second.id), "12"]) == 1
    assert "value rejected: slug is string: expected a string, got int 12" in capsys.readouterr().err
    assert cli(["review", "reject", str(second.id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "rejected"
    assert cli(["review", "accept", str(second.id)]) == 1
    assert "already rejected" in capsys.readouterr().err
    assert cli(["promote", spec.sink.dataset]) == 0
    printed = capsys.readouterr().out
    assert (
        "v1 promoted to v2 (2 records): 1 decision(s) applied, 1 rejected value(s) dropped, 0 item(s) still pending"
        in printed
    )
    assert cli(["promote", "no_such_dataset"]) == 1
    assert "no dataset 'no_such_dataset'" in capsys.readouterr().err
