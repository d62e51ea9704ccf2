"""A workflow's review policy: checked against the chain, applied to a run's written output
(items enqueued file by file), and the human decisions that later runs keep.

What goes to review: with `all`, every step's output fields of every record; with rules, the
records a rule matches, and the output fields of the step concerned (the step a rule names, or
the step that adds the field it tests; every step's outputs for a field of the schema).
`review.fields` replaces those fields with its own list.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from pipelines.augmenters.base import Augmenter
from pipelines.registry import build_chain
from pipelines.spec import ReviewRule, WorkflowSpec


# the policy, checked with the spec -----------------------------------------------------------
def check_review(spec: WorkflowSpec) -> list[str]:
    """Every field and step the review policy names must exist in the chain, with a fitting type."""
    review = spec.review
    if review.policy == "none":
        return []
    chain = build_chain(spec)
    columns: dict[str, pa.DataType] = {n: f.type.arrow for n, f in spec.schema_.fields.items()}
    for augmenter in chain:
        columns.update(augmenter.adds())
    steps = {a.step_name: a for a in chain}
    outputs = {c for a in chain for c in a.value_columns()}
    errors = []
    if review.policy == "all" and not outputs:
        errors.append("review.policy: 'all' reviews the steps' outputs, and this workflow has no step")
    for i, rule in enumerate(review.rules):
        where = f"review.rules[{i}]"
        if rule.field is not None:
            kind = columns.get(rule.field)
            if kind is None:
                errors.append(f"{where}.field: {rule.field!r} is not a field of the schema or a column a step adds")
            elif rule.below is not None and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                errors.append(f"{where}.below: {rule.field!r} is {kind}, below compares numbers")
            elif rule.regex is not None and not pa.types.is_string(kind):
                errors.append(f"{where}.regex: {rule.field!r} is {kind}, regex checks strings")
        if rule.step is not None:
            if rule.step not in steps:
                errors.append(f"{where}.step: unknown step {rule.step!r} (steps: {', '.join(steps) or 'none'})")
            elif rule.failed and steps[rule.step].status_column() is None:
                errors.append(f"{where}.failed: step {rule.step!r} ({steps[rule.step].name}) cannot fail per record")
    for j, name in enumerate(review.fields or []):
        if name not in outputs:
            errors.append(f"review.fields[{j}]: {name!r} is not an output of a step"
                          f" (outputs: {', '.join(sorted(outputs)) or 'none'})")
    return errors


@dataclass(frozen=True)
class Matcher:
    """One rule (or `all`) ready to run on a table: which rows it matches, which fields it sends."""

    reason: str
    fields: tuple[str, ...]
    rule: ReviewRule | None = None
    status_column: str | None = None

    def columns(self) -> set[str]:
        if self.rule is None:
            return set()
        return {self.rule.field} if self.rule.field else ({self.status_column} if self.status_column else set())

    def matches(self, table: pa.Table) -> list[bool]:
        rule, n = self.rule, table.num_rows
        if rule is None:
            return [True] * n
        if rule.step is not None:
            if self.status_column is None:  # a step that cannot fail: every record it saw
                return [True] * n
            wanted = "error" if rule.failed else "ok"
            return [s == wanted for s in table[self.status_column].to_pylist()]
        values = table[rule.field]
        if rule.below is not None:
            return pc.fill_null(pc.less(values, rule.below), False).to_pylist()
        if rule.regex is not None:
            pattern = re.compile(rule.regex)
            return [v is None or not pattern.fullmatch(v) for v in values.to_pylist()]
        return [v is None or (isinstance(v, str) and not v.strip()) for v in values.to_pylist()]


def matchers(spec: WorkflowSpec, chain: list[Augmenter] | None = None) -> list[Matcher]:
    review = spec.review
    if review.policy == "none":
        return []
    chain = chain if chain is not None else build_chain(spec)
    steps = {a.step_name: a for a in chain}
    adder = {c: a for a in chain for c in a.adds()}
    every = tuple(c for a in chain for c in a.value_columns())
    override = tuple(review.fields) if review.fields else None
    if review.policy == "all":
        return [Matcher("policy all", override or every)]
    found = []
    for rule in review.rules:
        if rule.step is not None:
            step = steps[rule.step]
            status = step.status_column()
            reason = f"step {rule.step} failed" if rule.failed else f"output of step {rule.step}"
            found.append(Matcher(reason, override or tuple(step.value_columns()), rule, status))
            continue
        concerned = adder.get(rule.field or "")
        fields = tuple(concerned.value_columns()) if concerned else every
        if rule.below is not None:
            reason = f"{rule.field} below {rule.below:g}"
        elif rule.regex is not None:
            reason = f"{rule.field} does not match {rule.regex!r}"
        else:
            reason = f"{rule.field} is empty"
        found.append(Matcher(reason, override or fields, rule))
    return found


# values between Arrow and JSON -----------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A cell as a JSON value: dates and times as ISO 8601 text."""
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any, arrow_type: pa.DataType) -> Any:
    """A stored JSON value back as what an Arrow column of this type takes."""
    if value is None:
        return None
    if pa.types.is_date(arrow_type) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if pa.types.is_timestamp(arrow_type) and isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


# enqueue after a run -------------------------------------------------------------------------
def enqueue(settings: Settings, spec: WorkflowSpec, run_id: str, output: Mapping[str, Any]) -> int:
    """Put the records of a written, catalogued output that the policy matches in the review
    queue, file by file; returns the number of items. Fields already decided are not asked again."""
    from augment_core.reviews import decisions_for, insert_items
    from augment_core.store import durably, open_store

    chain = build_chain(spec)
    found = matchers(spec, chain)
    if not found:
        return 0
    store, paths = open_store(settings), StoragePaths(settings)
    dataset, version = output["dataset"], int(output["version"])
    previous = _previous(store, dataset, version)
    step_of = {c: a for a in chain for c in a.value_columns()}
    fields = sorted({f for m in found for f in m.fields})
    wanted = {"record_uuid", *fields, *(c for m in found for c in m.columns())}
    provenance = {c: f"{step_of[c].step_name}_provenance" for c in fields}
    fs, path = paths.filesystem(output["path"])
    total = 0
    for fragment in pq.ParquetDataset(path, filesystem=fs).fragments:
        names = set(fragment.physical_schema.names)
        table = fragment.to_table(columns=sorted((wanted | set(provenance.values())) & names))
        if not table.num_rows:
            continue
        reasons: list[dict[str, str]] = [{} for _ in range(table.num_rows)]
        for matcher in found:
            for i, hit in enumerate(matcher.matches(table)):
                if hit:
                    for name in matcher.fields:
                        reasons[i].setdefault(name, matcher.reason)
        ids = table["record_uuid"].to_pylist()
        rows = [i for i in range(table.num_rows) if reasons[i]]
        if not rows:
            continue
        decided = decisions_for(store, spec.name, [ids[i] for i in rows], fields)
        before = _before_values(paths, previous, [ids[i] for i in rows], fields)
        cells = {c: table[c].to_pylist() for c in fields}
        provs = {c: table[p].to_pylist() if p in table.column_names else None for c, p in provenance.items()}
        items = []
        for i in rows:
            for name, reason in reasons[i].items():
                if (ids[i], name) in decided:
                    continue
                raw = provs[name][i] if provs[name] is not None else None
                items.append({
                    "dataset": dataset, "version": version, "record_uuid": ids[i], "field": name,
                    "step": step_of[name].step_name, "reason": reason,
                    "before": to_json(before.get((ids[i], name))), "after": to_json(cells[name][i]),
                    "provenance": json.loads(raw) if raw else {"augmenter": step_of[name].name,
                                                               "step": step_of[name].step_name, "run_id": run_id},
                })
        # Safe to repeat (it replaces its own pending items): wait out a database restart.
        total += durably(partial(insert_items, store, run_id, spec.name, items), f"review items of run {run_id}")
    from augment_core.events import open_bus

    open_bus(settings).publish(run_id, "review.created", {"dataset": dataset, "version": version, "items": total})
    return total


def _previous(store: Any, dataset: str, version: int) -> str | None:
    """The path of the version before this one, whose values are the items' `before`."""
    earlier = [v for v in store.list_dataset_versions(dataset) if v.version < version]
    return earlier[-1].path if earlier else None


def _before_values(
    paths: StoragePaths, previous: str | None, ids: Sequence[str], fields: Sequence[str]
) -> dict[tuple[str, str], Any]:
    if previous is None:
        return {}
    fs, path = paths.filesystem(previous)
    data = pads.dataset(path, filesystem=fs, format="parquet")
    present = [f for f in fields if f in data.schema.names]
    if not present:
        return {}
    table = data.to_table(columns=["record_uuid", *present], filter=pc.field("record_uuid").isin(list(ids)))
    found = {}
    for row in table.to_pylist():
        for name in present:
            found[(row["record_uuid"], name)] = row[name]
    return found


# the decisions later runs keep -----------------------------------------------------------------
@dataclass(frozen=True)
class DecisionLookup:
    """What an augmenter asks per batch: the human decisions on these records' fields, with values
    typed for their columns. Picklable: it travels into Ray Data actors and Serve replicas."""

    settings: Settings
    workflow: str
    run_id: str | None = None

    def __call__(self, record_uuids: Sequence[str], types: Mapping[str, pa.DataType]) -> dict[tuple[str, str], Any]:
        from augment_core.reviews import decisions_for
        from augment_core.store import open_store

        found = decisions_for(open_store(self.settings), self.workflow, record_uuids, list(types))
        return {key: kept._replace(value=from_json(kept.value, types[key[1]])) for key, kept in found.items()}
