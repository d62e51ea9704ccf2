"""`augment diff`: what changed between two versions of a dataset, record by record, field by field.

Records are matched by `record_uuid` (stable across versions: it derives from the key). Both
versions are read in 16 slices by the first hex digit of the id, so memory holds a sixteenth
of each version at a time, not both whole. Provenance columns differ on every run (run id,
latency) and are left out unless asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads

from augment_core.storage import StoragePaths

SLICES = "0123456789abcdef"
ID = "record_uuid"


@dataclass
class RecordChange:
    record_uuid: str
    fields: dict[str, tuple[Any, Any]]  # field -> (before, after)


@dataclass
class DatasetDiff:
    dataset: str
    before: int
    after: int
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    added_ids: list[str] = field(default_factory=list)  # the first `limit` of each kind
    removed_ids: list[str] = field(default_factory=list)
    changes: list[RecordChange] = field(default_factory=list)
    changed_fields: dict[str, int] = field(default_factory=dict)  # field -> records where it changed


def diff_versions(
    paths: StoragePaths, dataset: str, before: tuple[int, str], after: tuple[int, str],
    limit: int = 20, with_provenance: bool = False,
) -> DatasetDiff:
    """Compare two catalogued versions given as (version, path)."""
    old, new = _open(paths, before[1]), _open(paths, after[1])
    old_cols, new_cols = set(old.schema.names), set(new.schema.names)
    result = DatasetDiff(
        dataset, before[0], after[0],
        columns_added=[c for c in new.schema.names if c not in old_cols],
        columns_removed=[c for c in old.schema.names if c not in new_cols],
    )
    shared = [c for c in new.schema.names if c in old_cols and c != ID
              and (with_provenance or not c.endswith("_provenance"))]
    for digit in SLICES:
        _compare_slice(_slice(old, digit, shared), _slice(new, digit, shared), shared, result, limit)
    return result


def _open(paths: StoragePaths, path: str) -> pads.Dataset:
    fs, in_fs = paths.filesystem(path)
    return pads.dataset(in_fs, filesystem=fs, format="parquet")


def _slice(data: pads.Dataset, digit: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    table = data.to_table(columns=[ID, *columns], filter=pc.starts_with(pc.field(ID), digit))
    return {row.pop(ID): row for row in table.to_pylist()}


def _compare_slice(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], columns: list[str],
                   result: DatasetDiff, limit: int) -> None:
    for record_id in sorted(new.keys() - old.keys()):
        result.added += 1
        if len(result.added_ids) < limit:
            result.added_ids.append(record_id)
    for record_id in sorted(old.keys() - new.keys()):
        result.removed += 1
        if len(result.removed_ids) < limit:
            result.removed_ids.append(record_id)
    for record_id in sorted(old.keys() & new.keys()):
        before, after = old[record_id], new[record_id]
        changed = {c: (before[c], after[c]) for c in columns if not _same(before[c], after[c])}
        if not changed:
            result.unchanged += 1
            continue
        result.changed += 1
        for column in changed:
            result.changed_fields[column] = result.changed_fields.get(column, 0) + 1
        if len(result.changes) < limit:
            result.changes.append(RecordChange(record_id, changed))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # NaN == NaN here
        return True
    return a == b


def as_json(diff: DatasetDiff) -> dict[str, Any]:
    return {
        "dataset": diff.dataset,
        "before": diff.before,
        "after": diff.after,
        "columns_added": diff.columns_added,
        "columns_removed": diff.columns_removed,
        "counts": {"added": diff.added, "removed": diff.removed, "changed": diff.changed, "unchanged": diff.unchanged},
        "changed_fields": diff.changed_fields,
        "added": diff.added_ids,
        "removed": diff.removed_ids,
        "changes": [
            {"record_uuid": c.record_uuid, "fields": {k: {"before": v[0], "after": v[1]} for k, v in c.fields.items()}}
            for c in diff.changes
        ],
    }
