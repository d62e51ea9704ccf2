"""Putting a run's written output in the review queue: the records its policy matches, file by file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augment_core.events import open_bus
from augment_core.reviews import decisions_for, insert_items
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import MetadataStore, durably, open_store
from pipelines.augmenters.registry import build_chain
from pipelines.review.policy import matchers
from pipelines.review.values import to_json
from pipelines.spec.workflow import WorkflowSpec


def enqueue(settings: Settings, spec: WorkflowSpec, run_id: str, output: Mapping[str, Any]) -> int:
    """Put the records of a written, catalogued output that the policy matches in the review
    queue, file by file; returns the number of items. Fields already decided are not asked again."""
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
                given = provs[name]
                raw = given[i] if given is not None else None
                items.append({
                    "dataset": dataset, "version": version, "record_uuid": ids[i], "field": name,
                    "step": step_of[name].step_name, "reason": reason,
                    "before": to_json(before.get((ids[i], name))), "after": to_json(cells[name][i]),
                    "provenance": json.loads(raw) if raw else {"augmenter": step_of[name].name,
                                                               "step": step_of[name].step_name, "run_id": run_id},
                })
        # Safe to repeat (it replaces its own pending items): wait out a database restart.
        total += durably(partial(insert_items, store, run_id, spec.name, items), f"review items of run {run_id}",
                         settings.durable_write_window)
    open_bus(settings).publish(run_id, "review.created", {"dataset": dataset, "version": version, "items": total})
    return total


def _previous(store: MetadataStore, dataset: str, version: int) -> str | None:
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
