"""A dataset version's records read a page at a time, and the whole version (or a filtered slice)
written out as CSV or Parquet a batch at a time — what the data dashboard shows and the API's
download streams. Both read the version's files batch by batch: memory stays bounded however
large the version, and a page far in costs a scan up to it, never the whole version in memory.

A filter keeps the rows whose column, as text, equals a value (`employees` = "12").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augment_core.storage import StoragePaths
from pipelines.io.parquet import formulas_escaped
from pipelines.review.values import to_json

BATCH_ROWS = 65_536
READ_AHEAD = {"batch_readahead": 1, "fragment_readahead": 1, "use_threads": False}  # see version_profile
Format = Literal["csv", "parquet"]


def _open(paths: StoragePaths, path: str) -> pads.Dataset:
    fs, where = paths.filesystem(path)
    return pads.dataset(where, filesystem=fs, format="parquet")


def _expression(data: pads.Dataset, column: str | None, value: str | None) -> pads.Expression | None:
    """KeyError naming the columns there are, for a column the version does not have."""
    if not column:
        return None
    if column not in data.schema.names:
        raise KeyError(f"no column {column!r}; the version has {', '.join(data.schema.names)}")
    return pads.field(column).cast(pa.string()) == (value or "")


def read_page(paths: StoragePaths, path: str, columns: list[str] | None, column: str | None, value: str | None,
              offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """(rows `offset` .. `offset + limit` of those that match, as JSON values; how many match)."""
    data = _open(paths, path)
    wanted = _expression(data, column, value)
    missing = [c for c in columns or [] if c not in data.schema.names]
    if missing:
        raise KeyError(f"no column(s) {missing}; the version has {', '.join(data.schema.names)}")
    total = data.count_rows(filter=wanted)
    rows: list[dict[str, Any]] = []
    skipped = 0
    for batch in data.to_batches(columns=columns or None, filter=wanted, batch_size=BATCH_ROWS, **READ_AHEAD):
        if skipped + batch.num_rows <= offset:
            skipped += batch.num_rows
            continue
        start = max(0, offset - skipped)
        taken = batch.slice(start, limit - len(rows))
        rows.extend({k: to_json(v) for k, v in row.items()} for row in taken.to_pylist())
        skipped += batch.num_rows
        if len(rows) >= limit:
            break
    return rows, total


def export(paths: StoragePaths, path: str, fmt: Format, column: str | None = None,
           value: str | None = None) -> Iterator[bytes]:
    """The version (or the rows that match) as one CSV (text cells that a spreadsheet would run as
    a formula escaped) or one Parquet file, chunk by chunk. KeyError for an unknown column, raised
    before the first chunk."""
    data = _open(paths, path)
    wanted = _expression(data, column, value)
    return _chunks(data, fmt, wanted)


class _Spool:
    """A file that keeps what is written until taken, and counts its position on: the Parquet
    writer's footer records where each part began."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        taken = b"".join(self.parts)
        self.parts.clear()
        return taken


def _chunks(data: pads.Dataset, fmt: Format, wanted: pads.Expression | None) -> Iterator[bytes]:
    spool = _Spool()
    sink = pa.PythonFile(spool, mode="w")
    writer: pacsv.CSVWriter | pq.ParquetWriter = (
        pacsv.CSVWriter(sink, data.schema) if fmt == "csv" else pq.ParquetWriter(sink, data.schema))
    try:
        for batch in data.to_batches(filter=wanted, batch_size=BATCH_ROWS, **READ_AHEAD):
            writer.write_batch(formulas_escaped(batch) if fmt == "csv" else batch)
            if chunk := spool.take():
                yield chunk
    finally:
        writer.close()
    if chunk := spool.take():
        yield chunk
