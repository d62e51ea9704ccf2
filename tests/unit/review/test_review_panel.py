"""The review panel on items of a real (in-process) augmenting run against the fake provider: the
queue filtered and counted, an item shown with its differences marked, accept / edit (a value of the
wrong type refused) / reject / rerun as the signed-in user, a second reviewer refused with who
decided, bulk decisions over a filter, promote — all audited as the API's are."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.reviews import get_item
from augment_core.settings import Settings
from augment_core.store import open_store
from devtools.fake_openai import FakeOpenAI
from pipelines.workflows.folder import WorkflowFolder
from serve_apps.gateway.gate import Gate
from serve_apps.review_panel import review_access
from tests.unit.review.test_review import queued
from ui.review import (
    QueueFilter,
    ReviewAccess,
    ask_bulk_view,
    build_review_panel,
    bulk_view,
    decide_view,
    item_view,
    marked_diff,
    next_pending,
    promote_view,
    queue_filter,
    queue_view,
)

pytestmark = pytest.mark.unit


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'a.db'}"
    (tmp_path / "wf").mkdir()
    return Settings(storage_root=str(tmp_path / "data"), database_url=url, workflows_dir=str(tmp_path / "wf"))


@pytest.fixture
def users(settings: Settings) -> dict[str, str]:
    """Two operators and a viewer, named apart from other tests' (PostgreSQL's database is shared)."""
    identity, tag = Identity(open_store(settings)), uuid.uuid4().hex[:6]
    names = {"ana": f"ana-{tag}", "bo": f"bo-{tag}", "vera": f"vera-{tag}"}
    for who, role in (("ana", Role.operator), ("bo", Role.operator), ("vera", Role.viewer)):
        identity.create_user(names[who], role, None)
    return names


def panel_for(settings: Settings) -> ReviewAccess:
    return review_access(settings, WorkflowFolder(Path(settings.workflows_dir)), Gate(settings), "/augment")


def test_an_operator_works_through_the_queue_and_every_decision_is_theirs_and_audited(
        settings: Settings, fake: FakeOpenAI, users: dict[str, str]) -> None:
    spec, out, items = queued(settings, fake, n=2)
    panel = panel_for(settings)
    everything = queue_filter("pending", spec.sink.dataset, None, None, None, None)
    status, table, offset = queue_view(panel, everything, 0)
    total = len(items)
    assert status.startswith(f"**{total} pending** · 0 accepted") and f"items 1–{total} of {total}" in status
    assert list(table["id"]) == sorted(i.id for i in items.values()) and offset == 0

    record, _ = next(iter(items))
    number = items[(record, "headcount")]
    summary, diff, inputs, edit_box, offered, kind = item_view(panel, number.id)
    assert f"### Item {number.id} · pending" in summary and "field **headcount** (`int64`)" in summary
    assert "Sent by the rule: _" in summary and "**provider**" in summary
    assert "Company" in inputs and "record_uuid" not in inputs and "headcount" not in inputs
    assert 'class="added"' in diff and kind == "int64" and "headcount (int64)" in edit_box["label"]
    assert offered["visible"] is False  # no enum: typed by hand

    refused = decide_view(panel, users["ana"], "edit", number.id, "lots")
    assert refused == (f"⚠️ **Item {number.id} was not edited**: headcount is int64: expected an integer, "
                       "got 'lots'")
    assert get_item(open_store(settings), number.id).state == "pending"  # nothing lost
    assert decide_view(panel, users["ana"], "edit", number.id, " 42 ") == f"✓ Item {number.id} edited."
    assert get_item(open_store(settings), number.id).decided_value == 42
    flag = items[(record, "b2b")]
    assert "expected true or false" in decide_view(panel, users["ana"], "edit", flag.id, "yes")
    assert decide_view(panel, users["ana"], "edit", flag.id, "true") == f"✓ Item {flag.id} edited."

    text = items[(record, "industry")]
    offered = item_view(panel, text.id)[4]  # an enum offers its values, the proposal chosen
    assert offered["visible"] and offered["choices"] == ["software", "retail", "finance", "other"]
    assert offered["value"] == text.after
    assert decide_view(panel, users["ana"], "accept", text.id) == f"✓ Item {text.id} accepted."
    second = decide_view(panel, users["bo"], "reject", text.id)  # another reviewer, a moment later
    assert second.startswith(f"⚠️ **Item {text.id} was not rejected**: review item {text.id} is already accepted "
                             f"by {users['ana']} at ")
    assert get_item(open_store(settings), text.id).state == "accepted"
    viewer = decide_view(panel, users["vera"], "accept", text.id)
    assert f"needs the operator role; {users['vera']} is viewer" in viewer

    fake.reset()
    rerun = decide_view(panel, users["ana"], "rerun", text.id)
    assert rerun.startswith(f"✓ Item {text.id} rerun: the new proposal is ") and fake.stats()["requests"] == 1
    assert get_item(open_store(settings), text.id).state == "pending"

    ana, bo = f"{users['ana']} (session)", f"{users['bo']} (session)"
    entries = [(e.actor, e.action, e.outcome) for e in list_entries(open_store(settings), actor=users["ana"])]
    assert (ana, "review.edit", "refused") in entries and (ana, "review.rerun", "ok") in entries
    assert (bo, "review.reject", "refused") in [
        (e.actor, e.action, e.outcome) for e in list_entries(open_store(settings), actor=users["bo"])]
    after = next_pending(panel, everything, number.id)
    assert after is not None and after > number.id and get_item(open_store(settings), after).state == "pending"


def test_bulk_decisions_state_the_count_first_and_promote_applies_them(
        settings: Settings, fake: FakeOpenAI, users: dict[str, str]) -> None:
    spec, out, items = queued(settings, fake, n=3)
    panel = panel_for(settings)
    record, _ = next(iter(items))
    decide_view(panel, users["ana"], "reject", items[(record, "industry")].id)
    industry = QueueFilter(state="pending", dataset=spec.sink.dataset, field="industry")
    confirm, question, pending = ask_bulk_view(panel, "accept", industry)
    assert confirm["visible"] and question.startswith("**Accept all 2 pending item(s)** of dataset ")
    assert "field industry" in question
    hidden, outcome = bulk_view(panel, users["bo"], pending)
    assert outcome == "✓ 2 item(s) accepted." and hidden["visible"] is False
    assert ask_bulk_view(panel, "accept", industry)[1] == "No pending item matches this filter."
    counts = panel.counts(QueueFilter(dataset=spec.sink.dataset, field="industry"))
    assert counts == {"pending": 0, "accepted": 2, "edited": 0, "rejected": 1}

    assert promote_view(panel, users["ana"], None) == "⚠️ Choose the dataset to promote in the filter first."
    assert "no dataset 'nope'" in promote_view(panel, users["ana"], "nope")
    promoted = promote_view(panel, users["ana"], spec.sink.dataset)
    assert f"v{out['version']} promoted to **v{out['version'] + 1}**" in promoted
    assert "2 decision(s) applied, 1 rejected value(s) dropped" in promoted
    assert promoted.endswith(f"[Open it in the data dashboard](/augment/ui/data/?dataset={spec.sink.dataset})")
    assert [e.action for e in list_entries(open_store(settings), actor=users["ana"], action="dataset.promote")] == [
        "dataset.promote", "dataset.promote"]  # the refused one too


def test_the_queue_pages_past_the_end_to_the_last_page(settings: Settings, fake: FakeOpenAI) -> None:
    spec, out, items = queued(settings, fake, n=12)  # 12 records x 5 fields: more than a page
    panel = panel_for(settings)
    wanted = QueueFilter(dataset=spec.sink.dataset)
    status, table, offset = queue_view(panel, wanted, 50)
    assert f"items 51–{len(items)} of {len(items)}" in status and offset == 50 and len(table) == len(items) - 50
    _, _, offset = queue_view(panel, wanted, 500)  # past the end (decisions emptied it): the last page
    assert offset == 50
    assert marked_diff("Acme Ltd", "Acme Limited") == (
        '<div class="review-diff"><div><h4>Previous version</h4><p>Acme <del class="removed">Ltd</del></p></div>'
        '<div><h4>Proposed</h4><p>Acme <ins class="added">Limited</ins></p></div></div>')
    assert "&lt;b&gt;" in marked_diff(None, "<b>")  # escaped, never markup


def test_the_panel_names_its_endpoints_for_gradio_client(settings: Settings) -> None:
    names = {fn.api_name for fn in build_review_panel(panel_for(settings)).fns.values() if fn.api_name}
    assert {"review_queue", "open_item", "accept_item", "reject_item", "edit_item", "rerun_item", "next_pending",
            "bulk_decide", "promote"} <= names
