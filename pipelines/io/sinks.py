"""The quarantine's layout: where an invalid record came from, which field failed, why, and its raw values."""

from __future__ import annotations

import json

import pyarrow as pa

from pipelines.io.columns import ERRORS_COLUMN, RAW_COLUMN

QUARANTINE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("source_row", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("errors", pa.string()),
        ("record", pa.string()),
    ]
)


def quarantine_rows(table: pa.Table, run_id: str) -> pa.Table:
    """Invalid records in the quarantine layout: where, which field, why, and the raw values."""
    errors = [json.loads(e) for e in table[ERRORS_COLUMN].to_pylist()]
    n = table.num_rows
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "source": table["_source"] if "_source" in table.column_names else pa.nulls(n, pa.string()),
            "source_row": table["_source_row"] if "_source_row" in table.column_names else pa.nulls(n, pa.int64()),
            "field": pa.array([e[0]["field"] for e in errors], pa.string()),
            "reason": pa.array(["; ".join(f"{x['field']}: {x['reason']}" for x in e) for e in errors], pa.string()),
            "errors": table[ERRORS_COLUMN],
            "record": table[RAW_COLUMN],
        },
        schema=QUARANTINE_SCHEMA,
    )
