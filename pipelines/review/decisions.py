"""The human decisions later runs keep: looked up once per batch by record_uuid, put in place of
the step's values, and the step run only on the records still undecided (a record whose values
are all decided makes no provider call)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from augment_core.reviews import Kept, decisions_for
from augment_core.settings import Settings
from augment_core.store import open_store
from pipelines.augmenters.base import Augmenter, Produced, produced_values
from pipelines.inference.context import Decisions
from pipelines.review.values import from_json


@dataclass(frozen=True)
class DecisionLookup:
    """The human decisions on these records' fields, with values typed for their columns (the
    RunContext.decisions of a workflow). Picklable: it travels into Ray Data actors and Serve
    replicas."""

    settings: Settings
    workflow: str

    def __call__(self, record_uuids: Sequence[str], types: Mapping[str, pa.DataType]) -> dict[tuple[str, str], Kept]:
        found = decisions_for(open_store(self.settings), self.workflow, record_uuids, list(types))
        return {key: kept._replace(value=from_json(kept.value, types[key[1]])) for key, kept in found.items()}


def decidable_types(chain: Sequence[Augmenter]) -> dict[str, pa.DataType]:
    """The value columns people decide on, of every step, with their types."""
    types: dict[str, pa.DataType] = {}
    for augmenter in chain:
        declared = augmenter.adds()
        types.update({column: declared[column] for column in augmenter.value_columns()})
    return types


def decided_for_batch(lookup: Decisions, chain: Sequence[Augmenter], table: pa.Table) -> Decisions:
    """The decisions on every step's value columns for the batch's records, looked up once (not once
    per step: an online request of an eight-step workflow made eight store queries), answered to
    each step from that one result. A snapshot taken before the first step: every step of the batch
    keeps the decisions as they stood then."""
    if "record_uuid" not in table.column_names or not table.num_rows:
        return lookup
    types = decidable_types(chain)
    return answering_from(lookup(table["record_uuid"].to_pylist(), types) if types else {})


def answering_from(found: Mapping[tuple[str, str], Kept]) -> Decisions:
    """A lookup answered from decisions already found, without asking the store again."""

    def from_batch(record_uuids: Sequence[str], types: Mapping[str, pa.DataType]) -> dict[tuple[str, str], Kept]:
        if not found:
            return {}
        ids = set(record_uuids)
        return {key: kept for key, kept in found.items() if key[1] in types and key[0] in ids}

    return from_batch


def apply_keeping_decisions(
    augmenter: Augmenter, table: pa.Table, lookup: Decisions, run_id: str | None = None
) -> pa.Table:
    """The step on a batch, keeping the values people accepted or edited instead of computing
    them again: only the rows with an undecided value are processed. `run_id` goes into the
    provenance of a record no call was made for."""
    kept = _kept(augmenter, table, lookup)
    if not kept:
        return augmenter.apply(table)
    decidable = len(augmenter.value_columns())
    todo = [i for i in range(table.num_rows) if len(kept.get(i, ())) < decidable]
    if todo:
        produced = augmenter.compute(table.take(todo) if len(todo) < table.num_rows else table)
    else:
        produced = {column: [] for column in augmenter.adds()}
    return augmenter.attach(table, _with_kept(augmenter, produced, kept, todo, table.num_rows, run_id))


def _kept(augmenter: Augmenter, table: pa.Table, lookup: Decisions) -> dict[int, dict[str, Kept]]:
    """Row -> {column: decision} for the batch's decided values: one lookup per batch."""
    if "record_uuid" not in table.column_names or not table.num_rows:
        return {}
    ids = table["record_uuid"].to_pylist()
    declared = augmenter.adds()
    values = augmenter.value_columns()
    found = lookup(ids, {c: declared[c] for c in values})
    kept: dict[int, dict[str, Kept]] = {}
    if not found:
        return kept
    for i, record_id in enumerate(ids):
        for column in values:
            if (record_id, column) in found:
                kept.setdefault(i, {})[column] = found[(record_id, column)]
    return kept


def _with_kept(
    augmenter: Augmenter, produced: Mapping[str, Produced], kept: dict[int, dict[str, Kept]],
    todo: list[int], n: int, run_id: str | None,
) -> dict[str, list[Any]]:
    """The produced columns spread back over all n rows, decided values put in, and the
    provenance saying which values were kept and why."""
    full: dict[str, list[Any]] = {}
    for column, values in produced.items():
        spread: list[Any] = [None] * n
        for j, value in zip(todo, produced_values(values)):
            spread[j] = value
        full[column] = spread
    status, provenance = augmenter.status_column(), f"{augmenter.step_name}_provenance"
    processed = set(todo)
    for i, decided in kept.items():
        for column, decision in decided.items():
            full[column][i] = decision.value
        if provenance in full:
            old = full[provenance][i] if i in processed else None
            record = json.loads(old) if old else {"augmenter": augmenter.name, "step": augmenter.step_name,
                                                  "attempts": 0, "run_id": run_id}
            record["kept"] = {c: f"{d.state} in review {d.item_id}" for c, d in decided.items()}
            full[provenance][i] = json.dumps(record, sort_keys=True, default=str)
        if i not in processed and status in full:
            full[status][i] = "ok"
    return full
