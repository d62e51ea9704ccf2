"""What a person does with a review item: accept, edit, reject or rerun it. Shared by the CLI and
the API; each action publishes its review.* event on the item's run.

Rule for decided items (see augment_core/reviews.py): the same action again returns the item
unchanged; a different one is a ReviewConflict until the item is rerun.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augment_core.events import open_bus
from augment_core.reviews import ReviewItem, decide, get_item, repropose
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import open_store
from pipelines import metrics
from pipelines.engine.inprocess import InProcessEngine
from pipelines.review.values import from_json, to_json
from pipelines.workflows.folder import WorkflowFolder


class InvalidValue(ValueError):
    """An edited value that does not fit its field's type."""


class RerunFailed(Exception):
    """The record could not be augmented again (its workflow is gone or broken, or it is invalid)."""


def accept(settings: Settings, item_id: int, by: str | None = None) -> ReviewItem:
    return _decide(settings, item_id, "accepted", None, "review.accepted", by)


def reject(settings: Settings, item_id: int, by: str | None = None) -> ReviewItem:
    return _decide(settings, item_id, "rejected", None, "review.rejected", by)


def edit(settings: Settings, item_id: int, value: Any, by: str | None = None) -> ReviewItem:
    """Accept a person's value instead of the proposal; InvalidValue when it does not fit the field."""
    item = get_item(open_store(settings), item_id)
    arrow_type = field_type(settings, item)
    checked = to_json(check_value(value, arrow_type, item.field))
    return _decide(settings, item_id, "edited", checked, "review.edited", by)


def _decide(settings: Settings, item_id: int, state: str, value: Any, event: str, by: str | None) -> ReviewItem:
    item, changed = decide(open_store(settings), item_id, state, value, by)
    if changed:  # one event per decision: an idempotent repeat publishes nothing
        open_bus(settings).publish(item.run_id, event, {"item": item.id, "record_uuid": item.record_uuid,
                                                        "field": item.field, "by": by})
        metrics.count("augment_review_decisions", 1, dataset=item.dataset, decision=state)
    return item


def rerun(settings: Settings, workflows: WorkflowFolder, item_id: int) -> ReviewItem:
    """Augment the item's record again now, with its workflow's chain (the online path), and make
    the result the item's new proposal, pending; a decision it had is withdrawn first, so the
    chain does not simply keep it."""
    store = open_store(settings)
    item = get_item(store, item_id)
    record = input_record(settings, item)
    try:
        known = workflows.online(item.workflow)
        # A fresh answer, not the cached one the run got: that is what a person asks a rerun for.
        workflow = InProcessEngine(known.spec, dataclasses.replace(known.context, use_cache=False))
    except KeyError:
        raise RerunFailed(f"workflow {item.workflow!r} is not in {workflows.folder}") from None
    except Exception as exc:  # WorkflowUnusable, a missing folder: say why
        raise RerunFailed(str(exc)) from None
    repropose(store, item_id, item.after, item.provenance)  # withdraw the decision, keep the proposal
    try:
        result = workflow.augment([record])
        if not result.records:
            reasons = "; ".join(f"{e.get('field')}: {e.get('reason')}" for r in result.invalid for e in r["errors"])
            raise RerunFailed(f"record {item.record_uuid} is not valid for {item.workflow} now: {reasons}")
        row = result.records[0]
        if item.field not in row:
            raise RerunFailed(f"workflow {item.workflow!r} no longer adds {item.field!r}")
        status = row.get(f"{item.step}_status")
        if status not in (None, "ok"):  # an error or a skip is no proposal: the old one stays
            raise RerunFailed(f"step {item.step!r} gave no value ({status}): {row.get(f'{item.step}_error')}")
    except Exception as exc:
        if item.state != "pending":  # a failed rerun loses no decision
            decide(store, item_id, item.state, item.decided_value)
        if isinstance(exc, RerunFailed):
            raise
        raise RerunFailed(f"rerun of item {item_id} failed: {type(exc).__name__}: {exc}") from exc
    raw = row.get(f"{item.step}_provenance")
    provenance = _parsed(raw) or {"step": item.step, "rerun": True}
    updated = repropose(store, item_id, to_json(row[item.field]), provenance)
    open_bus(settings).publish(updated.run_id, "review.rerun", {"item": updated.id, "record_uuid": updated.record_uuid,
                                                                "field": updated.field})
    metrics.count("augment_review_decisions", 1, dataset=updated.dataset, decision="rerun")
    return updated


def _parsed(raw: Any) -> dict[str, Any] | None:
    return json.loads(raw) if isinstance(raw, str) and raw else None


def input_record(settings: Settings, item: ReviewItem) -> dict[str, Any]:
    """The record's input fields as its dataset version holds them, as JSON values."""
    version = open_store(settings).get_dataset_version(item.dataset, item.version)
    fs, path = StoragePaths(settings).filesystem(version.path)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(
        filter=pc.field("record_uuid") == item.record_uuid)
    if not table.num_rows:
        raise RerunFailed(f"record {item.record_uuid} is not in {item.dataset} v{item.version}")
    return {k: to_json(v) for k, v in table.slice(0, 1).to_pylist()[0].items()}


def field_type(settings: Settings, item: ReviewItem) -> pa.DataType:
    """The Arrow type of the item's field, from the dataset version the item was proposed in."""
    version = open_store(settings).get_dataset_version(item.dataset, item.version)
    fs, path = StoragePaths(settings).filesystem(version.path)
    return pq.ParquetDataset(path, filesystem=fs).schema.field(item.field).type


def value_from_text(text: str, arrow_type: pa.DataType, field: str) -> Any:
    """What a person typed for a field (a page's text box), as the JSON value `edit` takes: a
    number for a number field, true/false for a boolean one, the text itself for the rest.
    InvalidValue, in `check_value`'s words, for text that is no such value ("lots" for an int)."""
    stripped = text.strip()
    def fail(expected: str) -> InvalidValue:
        return InvalidValue(f"{field} is {arrow_type}: expected {expected}, got {stripped!r}")

    if pa.types.is_boolean(arrow_type):
        if stripped.lower() not in ("true", "false"):
            raise fail("true or false")
        return stripped.lower() == "true"
    if pa.types.is_integer(arrow_type):
        try:
            return int(stripped)
        except ValueError:
            raise fail("an integer") from None
    if pa.types.is_floating(arrow_type):
        try:
            number = float(stripped)
        except ValueError:
            raise fail("a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise fail("a finite number")
        return number
    if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type):
        return stripped
    return text


def check_value(value: Any, arrow_type: pa.DataType, field: str) -> Any:
    """The value as the field's column takes it, or InvalidValue saying why not. Strict: no
    guessing (the text "3" is not an integer, 1 is not true, 1.5 is not an integer)."""
    def fail(expected: str) -> InvalidValue:
        return InvalidValue(f"{field} is {arrow_type}: expected {expected}, got {type(value).__name__} {value!r}")

    if value is None:
        raise InvalidValue(f"{field}: null is not a value; reject the item to drop the proposed value")
    if pa.types.is_boolean(arrow_type):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if pa.types.is_integer(arrow_type):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
    elif pa.types.is_floating(arrow_type):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        value = float(value)
    elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if not isinstance(value, str):
            raise fail("a string")
    elif pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type):
        if not isinstance(value, str):
            raise fail("an ISO 8601 string")
        try:
            value = from_json(value, arrow_type)
        except ValueError as exc:
            raise InvalidValue(f"{field} is {arrow_type}: {exc}") from None
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            raise InvalidValue(f"{field} is {arrow_type}: give the time zone, e.g. 2024-01-31T10:00:00Z")
    try:
        pa.array([value], type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise InvalidValue(f"{field} is {arrow_type}: {exc}") from None
    return value
