"""Review items and human decisions in the metadata store (tables defined in augment_core/store.py).

An item is one field of one record a run proposed; a decision (accepted or edited) is what later
runs of the workflow keep instead of augmenting anew. Decided items are final: the same action
again changes nothing; another one is a conflict until the item is rerun, which puts it back to
pending with a fresh proposal.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from pydantic import BaseModel

from augment_core.store import (
    MetadataStore,
    aware,
    review_decisions_table,
    review_items_table,
    utcnow,
)

REVIEW_STATES = ("pending", "accepted", "edited", "rejected")
KEPT_STATES = frozenset({"accepted", "edited"})
CHUNK = 5000  # record ids per IN clause: far below SQLite's and PostgreSQL's bind-parameter limits


class ReviewItem(BaseModel):
    id: int
    run_id: str
    workflow: str
    dataset: str
    version: int
    record_uuid: str
    field: str
    step: str
    reason: str
    before: Any = None
    after: Any = None
    provenance: dict[str, Any] | None = None
    state: str
    decided_value: Any = None
    decided_at: dt.datetime | None = None
    decided_by: str | None = None
    created_at: dt.datetime


class Kept(NamedTuple):
    """A human decision a run keeps: its state, value and the item it was made on."""

    state: str
    value: Any
    item_id: int


class ReviewConflict(Exception):
    """An action that contradicts the decision an item already carries."""


def _item(row: sa.RowMapping) -> ReviewItem:
    data = dict(row)
    for key in ("decided_at", "created_at"):
        data[key] = aware(data[key])
    return ReviewItem(**data)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def insert_items(store: MetadataStore, run_id: str, workflow: str, rows: list[dict[str, Any]]) -> int:
    """Add one run's items in bulk; pending items for the same records and fields are replaced
    (their proposal is outdated; a repeated call replaces its own), decided ones stay as history."""
    if not rows:
        return 0
    table = review_items_table
    now = utcnow()
    fields = sorted({r["field"] for r in rows})
    with store.engine.begin() as conn:
        for ids in _chunks(sorted({r["record_uuid"] for r in rows})):
            conn.execute(table.delete().where(
                table.c.workflow == workflow, table.c.state == "pending",
                table.c.record_uuid.in_(ids), table.c.field.in_(fields),
            ))
        conn.execute(table.insert(), [{**r, "run_id": run_id, "workflow": workflow, "state": "pending",
                                       "created_at": now} for r in rows])
    return len(rows)


def _where(dataset: str | None = None, state: str | None = None, run_id: str | None = None,
           workflow: str | None = None, step: str | None = None, field: str | None = None,
           reason: str | None = None, after_id: int | None = None) -> list[sa.ColumnElement[bool]]:
    table = review_items_table
    where = [c == v for c, v in ((table.c.dataset, dataset), (table.c.state, state), (table.c.run_id, run_id),
                                 (table.c.workflow, workflow), (table.c.step, step), (table.c.field, field),
                                 (table.c.reason, reason)) if v is not None]
    return where + ([table.c.id > after_id] if after_id is not None else [])


def list_items(
    store: MetadataStore, *, dataset: str | None = None, state: str | None = None, run_id: str | None = None,
    workflow: str | None = None, step: str | None = None, field: str | None = None, reason: str | None = None,
    after_id: int | None = None, limit: int = 50, offset: int = 0,
) -> tuple[list[ReviewItem], int]:
    """A page of items, oldest first (only those after item `after_id`, if given), and how many
    match in all."""
    table = review_items_table
    where = _where(dataset, state, run_id, workflow, step, field, reason, after_id)
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar() or 0
        rows = conn.execute(
            table.select().where(*where).order_by(table.c.id).limit(limit).offset(offset)
        ).mappings().all()
    return [_item(r) for r in rows], int(total)


def count_states(store: MetadataStore, *, dataset: str | None = None, run_id: str | None = None,
                 step: str | None = None, field: str | None = None, reason: str | None = None) -> dict[str, int]:
    """How many items of each state match (every state, 0 included)."""
    table = review_items_table
    where = _where(dataset, None, run_id, None, step, field, reason)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.state, sa.func.count()).where(*where).group_by(table.c.state)).all()
    found = {str(state): int(n) for state, n in rows}
    return {state: found.get(state, 0) for state in REVIEW_STATES}


def facets(store: MetadataStore, limit: int = 200) -> dict[str, list[str]]:
    """The distinct datasets, runs, steps, fields and rules (reasons) of the queue, for filters;
    the newest runs first, at most `limit` of each."""
    table = review_items_table
    found: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for name in ("dataset", "step", "field", "reason"):
            column = table.c[name]
            found[name] = [str(v) for v in conn.execute(sa.select(column).distinct().order_by(column).limit(limit))
                           .scalars()]
        newest = sa.func.max(table.c.id)
        found["run_id"] = [str(v) for v in conn.execute(
            sa.select(table.c.run_id).group_by(table.c.run_id).order_by(newest.desc()).limit(limit)).scalars()]
    return found


def matching_ids(store: MetadataStore, *, state: str = "pending", dataset: str | None = None,
                 run_id: str | None = None, step: str | None = None, field: str | None = None,
                 reason: str | None = None, limit: int = 100_000) -> list[int]:
    """The ids of the items that match, oldest first: what a bulk decision goes through."""
    table = review_items_table
    where = _where(dataset, state, run_id, None, step, field, reason)
    with store.engine.connect() as conn:
        return [int(i) for i in conn.execute(sa.select(table.c.id).where(*where).order_by(table.c.id).limit(limit))
                .scalars()]


def decisions_by_field(store: MetadataStore, dataset: str, max_version: int) -> dict[str, dict[str, int]]:
    """Field -> how many of the dataset's items (proposed up to `max_version`) are in each state."""
    table = review_items_table
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.field, table.c.state, sa.func.count())
                            .where(table.c.dataset == dataset, table.c.version <= max_version)
                            .group_by(table.c.field, table.c.state)).all()
    found: dict[str, dict[str, int]] = {}
    for name, state, n in rows:
        found.setdefault(str(name), dict.fromkeys(REVIEW_STATES, 0))[str(state)] = int(n)
    return found


def decided_per_day(store: MetadataStore, days: int = 30) -> list[tuple[str, str, int]]:
    """(UTC day, state, items decided that day) over the last `days` days, oldest first."""
    table = review_items_table
    since = utcnow() - dt.timedelta(days=days)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.decided_at, table.c.state)
                            .where(table.c.decided_at.is_not(None), table.c.decided_at >= since)).all()
    counts = Counter((aware(at).strftime("%Y-%m-%d"), str(state)) for at, state in rows)  # type: ignore[union-attr]
    return sorted((day, state, n) for (day, state), n in counts.items())


def get_item(store: MetadataStore, item_id: int) -> ReviewItem:
    with store.engine.connect() as conn:
        row = conn.execute(review_items_table.select().where(review_items_table.c.id == item_id)).mappings().first()
    if row is None:
        raise KeyError(f"no review item {item_id}")
    return _item(row)


def decide(store: MetadataStore, item_id: int, state: str, value: Any = None,
           by: str | None = None) -> tuple[ReviewItem, bool]:
    """Accept (value: the proposal), edit (value: the person's) or reject an item, as user `by`.
    Returns the item and whether anything changed; ReviewConflict when it already carries another
    decision."""
    assert state in ("accepted", "edited", "rejected"), state
    table, decisions = review_items_table, review_decisions_table
    item = get_item(store, item_id)
    if state == "accepted":
        value = item.after
    elif state == "rejected":
        value = None
    now = utcnow()
    with store.engine.begin() as conn:
        # Only a pending item takes a decision: two people deciding at once cannot both win.
        moved = conn.execute(table.update().where(table.c.id == item_id, table.c.state == "pending")
                             .values(state=state, decided_value=value, decided_at=now, decided_by=by)).rowcount
        if moved:
            key = (decisions.c.workflow == item.workflow, decisions.c.record_uuid == item.record_uuid,
                   decisions.c.field == item.field)
            conn.execute(decisions.delete().where(*key))
            if state in KEPT_STATES:
                conn.execute(decisions.insert().values(
                    workflow=item.workflow, record_uuid=item.record_uuid, field=item.field, state=state,
                    value=value, item_id=item_id, decided_at=now,
                ))
    current = get_item(store, item_id)
    if moved:
        return current, True
    if current.state == state and (state != "edited" or current.decided_value == value):
        return current, False
    who = f" by {current.decided_by}" if current.decided_by else ""
    when = f" at {current.decided_at:%Y-%m-%d %H:%M:%S} UTC" if current.decided_at else ""
    raise ReviewConflict(
        f"review item {item_id} is already {current.state}{who}{when}"
        + (f" (value {current.decided_value!r})" if current.state == "edited" else "")
        + ": rerun it to decide again"
    )


def repropose(store: MetadataStore, item_id: int, after: Any, provenance: dict[str, Any] | None) -> ReviewItem:
    """A fresh proposal for an item (rerun): back to pending, its decision withdrawn."""
    get_item(store, item_id)  # KeyError when there is no such item
    table, decisions = review_items_table, review_decisions_table
    with store.engine.begin() as conn:
        conn.execute(table.update().where(table.c.id == item_id).values(
            after=after, provenance=provenance, state="pending", decided_value=None, decided_at=None, decided_by=None,
        ))
        conn.execute(decisions.delete().where(decisions.c.item_id == item_id))
    return get_item(store, item_id)


def decisions_for(
    store: MetadataStore, workflow: str, record_uuids: Sequence[str], fields: Sequence[str]
) -> dict[tuple[str, str], Kept]:
    """The kept decisions of these records and fields: one query per CHUNK record ids."""
    found: dict[tuple[str, str], Kept] = {}
    if not record_uuids or not fields:
        return found
    wanted = set(fields)  # a record's decisions are few: its other fields' are left out here
    unique = list(dict.fromkeys(record_uuids))
    with store.engine.connect() as conn:
        if len(unique) == 1:
            rows = conn.execute(_DECISIONS_OF_ONE, {"workflow": workflow, "id": unique[0]}).all()
        else:
            rows = [row for ids in _chunks(unique)
                    for row in conn.execute(_DECISIONS, {"workflow": workflow, "ids": ids}).all()]
    found.update({(r.record_uuid, r.field): Kept(r.state, r.value, r.item_id) for r in rows if r.field in wanted})
    return found


# Built once: every online augment asks it, and building the statement each time (SQLAlchemy's
# coercions and cache key) cost 0.4 ms of a one-record augment's 3.5 (docs/benchmarks.md, part 8).
# One record's (most online calls) without an expanding IN: SQLAlchemy rewrites such a statement on
# every execution (0.15-0.25 ms, most of the query's cost on SQLite; part 9).
_COLUMNS = (review_decisions_table.c.record_uuid, review_decisions_table.c.field, review_decisions_table.c.state,
            review_decisions_table.c.value, review_decisions_table.c.item_id)
_DECISIONS = sa.select(*_COLUMNS).where(
    review_decisions_table.c.workflow == sa.bindparam("workflow"),
    review_decisions_table.c.record_uuid.in_(sa.bindparam("ids", expanding=True)),
)
_DECISIONS_OF_ONE = sa.select(*_COLUMNS).where(
    review_decisions_table.c.workflow == sa.bindparam("workflow"),
    review_decisions_table.c.record_uuid == sa.bindparam("id"),
)


def latest_items(
    store: MetadataStore, dataset: str, record_uuids: Sequence[str], max_version: int
) -> dict[tuple[str, str], ReviewItem]:
    """The newest item per (record, field) of a dataset up to a version: what promote applies."""
    table = review_items_table
    latest: dict[tuple[str, str], ReviewItem] = {}
    with store.engine.connect() as conn:
        for ids in _chunks(list(dict.fromkeys(record_uuids))):
            rows = conn.execute(table.select().where(
                table.c.dataset == dataset, table.c.version <= max_version, table.c.record_uuid.in_(ids),
            ).order_by(table.c.id)).mappings().all()
            latest.update({(r["record_uuid"], r["field"]): _item(r) for r in rows})
    return latest
