"""`augment promote`: a new catalogued version of a dataset with the review decisions applied.

Accepted and edited values replace the proposed ones; a rejected value becomes null and its
record stays; pending items are counted and left as they are. Written file by file from the
source version, which is not touched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from augment_core.reviews import latest_items
from augment_core.settings import Settings
from augment_core.storage import StoragePaths, join
from augment_core.store import open_store
from pipelines.io.parquet import write_empty_parquet
from pipelines.review.values import from_json


@dataclass
class PromoteResult:
    dataset: str
    from_version: int
    version: int
    path: str
    rows: int
    applied: int  # accepted or edited values written
    rejected: int  # rejected values dropped (set null)
    pending: int  # items still waiting: their proposed values are kept


def promote(settings: Settings, dataset: str, from_version: int | None = None) -> PromoteResult:
    """Write and catalogue the promoted version; KeyError for an unknown dataset or version."""
    store, paths = open_store(settings), StoragePaths(settings)
    versions = store.list_dataset_versions(dataset)
    if not versions:
        raise KeyError(f"no dataset {dataset!r}")
    source = store.get_dataset_version(dataset, from_version) if from_version else versions[-1]
    promote_id = f"promote-{uuid.uuid4().hex[:12]}"
    out_uri = join(paths.root, "datasets", dataset, promote_id)
    in_fs, in_path = paths.filesystem(source.path)
    out_fs, out_path = paths.filesystem(out_uri)
    out_fs.create_dir(out_path, recursive=True)
    parquet = pq.ParquetDataset(in_path, filesystem=in_fs)
    schema = parquet.schema
    rows = applied = rejected = pending = 0
    for n, fragment in enumerate(parquet.fragments):
        table = fragment.to_table(schema=schema)
        if not table.num_rows:
            continue
        ids = table["record_uuid"].to_pylist()
        items = latest_items(store, dataset, ids, source.version)
        changes: dict[str, dict[int, object]] = {}
        for i, record_id in enumerate(ids):
            for name in schema.names:
                item = items.get((record_id, name))
                if item is None:
                    continue
                if item.state == "pending":
                    pending += 1
                    continue
                value = None if item.state == "rejected" else from_json(item.decided_value, schema.field(name).type)
                changes.setdefault(name, {})[i] = value
                applied += item.state != "rejected"
                rejected += item.state == "rejected"
        for name, by_row in changes.items():
            values = table[name].to_pylist()
            for i, value in by_row.items():
                values[i] = value
            index = table.column_names.index(name)
            table = table.set_column(index, schema.field(name), pa.array(values, schema.field(name).type))
        pq.write_table(table, f"{out_path}/part-{n:05d}.parquet", filesystem=out_fs)
        rows += table.num_rows
    if rows == 0:
        write_empty_parquet(out_fs, out_path, schema)
    columns = {field.name: str(field.type) for field in schema}
    entry = store.add_next_dataset_version(dataset, out_uri, columns, rows, promote_id)
    return PromoteResult(dataset, source.version, entry.version, out_uri, rows, applied, rejected, pending)
