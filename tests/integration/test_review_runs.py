"""Review with real batch runs on the session cluster against the fake OpenAI server: a run fills
the queue; decisions are kept by the next run, which calls the provider only for records with
something left to decide; promote writes the decisions into a new version."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from augment_core.events import open_bus
from augment_core.reviews import list_items
from augment_core.settings import Settings
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.operations import review_actions
from pipelines.operations.promote import promote
from tests.integration.conftest import run_spec
from tests.integration.test_inference_runs import (
    llm_step,
    provider,
    rows,
    write_csv,
    write_spec,
)

FAKE_PROVIDER = {"retry_after_s": 0.2}  # the `fake` server of tests/conftest.py


def test_runs_respect_review_decisions_and_promote_applies_them(
        ray_cluster, settings: Settings, fake: FakeOpenAI, tmp_path: Path) -> None:
    name = f"review_{uuid.uuid4().hex[:8]}"
    data = write_csv(tmp_path / "orgs.csv", rows(6, name, {5: "#400"}))
    providers = {"fake": provider(fake.base_url, f"acct_{name}")}
    review = {"rules": [{"step": "profile"}, {"step": "profile", "failed": True}]}
    spec = write_spec(tmp_path, name, data, providers, [llm_step("profile", f"Profile ({name}).")], review=review)

    first = run_spec(settings, spec)
    assert first.status == "succeeded", first.error
    store = open_store(settings)
    items, total = list_items(store, run_id=first.id, limit=1000)
    assert first.output["review_items"] == total == 6 * 3  # industry, pitch, b2b of every record
    assert [e.data["items"] for e in open_bus(settings).read(first.id) if e.type == "review.created"] == [18]
    out = {r["org_id"]: r for r in pq.read_table(first.output["path"]).to_pylist()}
    by = {(i.record_uuid, i.field): i for i in items}
    a, b, c = (out[f"ORG-00{i}"]["record_uuid"] for i in range(3))
    assert by[(out["ORG-005"]["record_uuid"], "industry")].reason == "step profile failed"
    for field in ("industry", "pitch"):
        review_actions.accept(settings, by[(a, field)].id)
    review_actions.edit(settings, by[(a, "b2b")].id, True)
    review_actions.edit(settings, by[(b, "pitch")].id, "Written by a person.")
    review_actions.reject(settings, by[(c, "industry")].id)

    # The same workflow with its prompt edited: the cache cannot answer, so each record sent is a call.
    fake.reset()
    (tmp_path / "edited").mkdir()
    edited = write_spec(tmp_path / "edited", name, data, providers,
                        [llm_step("profile", f"Profile ({name}), edited.")], review=review)
    second = run_spec(settings, edited)
    assert second.status == "succeeded", second.error
    assert fake.stats()["requests"] == 5  # every record but A, whose outputs are all decided
    assert second.counts["augmented"] == 5 and second.counts["failed"] == 1
    again = {r["org_id"]: r for r in pq.read_table(second.output["path"]).to_pylist()}
    kept = json.loads(again["ORG-000"]["profile_provenance"])
    assert (again["ORG-000"]["industry"], again["ORG-000"]["pitch"], again["ORG-000"]["b2b"]) == (
        out["ORG-000"]["industry"], out["ORG-000"]["pitch"], True)
    assert kept["kept"] == {"industry": f"accepted in review {by[(a, 'industry')].id}",
                            "pitch": f"accepted in review {by[(a, 'pitch')].id}",
                            "b2b": f"edited in review {by[(a, 'b2b')].id}"}
    assert kept["attempts"] == 0 and kept["run_id"] == second.id and again["ORG-000"]["profile_status"] == "ok"
    assert again["ORG-001"]["pitch"] == "Written by a person."
    assert json.loads(again["ORG-001"]["profile_provenance"])["kept"] == {
        "pitch": f"edited in review {by[(b, 'pitch')].id}"}
    assert second.output["review_items"] == 18 - 4  # decided fields are not asked again

    result = promote(settings, name)
    assert (result.from_version, result.version, result.rows) == (2, 3, 6)
    promoted = {r["org_id"]: r for r in pq.read_table(result.path).to_pylist()}
    assert set(promoted) == set(again)
    assert promoted["ORG-001"]["pitch"] == "Written by a person." and promoted["ORG-000"]["b2b"] is True
    # C's industry was rejected in v1; v2 proposed anew, pending, so v2's value stands.
    assert promoted["ORG-002"]["industry"] == again["ORG-002"]["industry"] and result.pending == 14
