"""`decisions_for`: the kept decisions of some records' fields, one record's by its own statement."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from augment_core import reviews
from augment_core.reviews import Kept, decisions_for
from augment_core.store import MetadataStore, review_decisions_table


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MetadataStore:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'a.db'}"
    store = MetadataStore(url)
    now = dt.datetime.now(dt.timezone.utc)
    rows = [("w", "r1", "a", "edited", "x", 1), ("w", "r1", "b", "accepted", 2, 2),
            ("w", "r2", "a", "accepted", None, 3), ("other", "r1", "a", "edited", "not this workflow", 4)]
    with store.engine.begin() as conn:
        conn.execute(review_decisions_table.insert(), [
            {"workflow": w, "record_uuid": r, "field": f, "state": s, "value": v, "item_id": i, "decided_at": now}
            for w, r, f, s, v, i in rows])
    return store


def test_one_record_and_many_get_their_decisions_on_the_fields_asked(store: MetadataStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert decisions_for(store, "w", ["r1"], ["a", "b"]) == {("r1", "a"): Kept("edited", "x", 1),
                                                             ("r1", "b"): Kept("accepted", 2, 2)}
    assert decisions_for(store, "w", ["r1", "r1"], ["b", "zz"]) == {("r1", "b"): Kept("accepted", 2, 2)}
    assert decisions_for(store, "w", ["r3"], ["a"]) == {}
    everyone = {("r1", "a"): Kept("edited", "x", 1), ("r2", "a"): Kept("accepted", None, 3)}
    assert decisions_for(store, "w", ["r1", "r2", "r3"], ["a"]) == everyone
    monkeypatch.setattr(reviews, "CHUNK", 1)  # one query per record id
    assert decisions_for(store, "w", ["r1", "r2", "r3"], ["a"]) == everyone
    assert decisions_for(store, "w", [], ["a"]) == {} and decisions_for(store, "w", ["r1"], []) == {}
