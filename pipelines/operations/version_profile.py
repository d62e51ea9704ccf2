"""The overview of a dataset version, read batch by batch so that memory stays bounded however
large the version is: for each column its type, how many rows fill it, how many distinct values it
has (exactly up to `MAX_TRACKED`, then "more than"), its most common values, and for numbers the
range, mean and a histogram; for each augmenting step (a `<step>_status` column) how many rows it
left `ok`, `error` or `skipped`. Versions never change, so callers may keep a profile for good.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from augment_core.storage import StoragePaths

MAX_TRACKED = 10_000  # distinct values counted per column; beyond, top values are of those seen first
TOP = 5
BINS = 10
BATCH_ROWS = 65_536
# By default the scanner reads 4 files and 16 batches ahead, decoding on every core: memory then
# grows with the version. One batch at a time keeps it near one row group's worth.
READ_AHEAD = {"batch_readahead": 1, "fragment_readahead": 1, "use_threads": False}
STATUS_SUFFIX = "_status"
STATES = ("ok", "error", "skipped")


@dataclass
class ColumnProfile:
    name: str
    type: str
    filled: int = 0
    distinct: int = 0
    distinct_capped: bool = False  # more distinct values than MAX_TRACKED: `distinct` is a floor
    top: list[tuple[str, int]] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    histogram: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, rows) for numbers


@dataclass
class VersionProfile:
    rows: int
    columns: list[ColumnProfile]
    steps: dict[str, dict[str, int]]  # step -> rows in each of STATES
    seconds: float


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


class _Tally:
    """One column's counts over the batches."""

    def __init__(self, name: str, kind: pa.DataType) -> None:
        self.profile = ColumnProfile(name, str(kind))
        self.numeric = _numeric(kind)
        self.values: Counter[Any] = Counter()
        self.total = 0.0

    def add(self, array: pa.ChunkedArray | pa.Array) -> None:
        profile = self.profile
        profile.filled += len(array) - array.null_count
        if self.numeric:
            bounds = pc.min_max(array).as_py()
            if bounds["min"] is not None:
                low, high = float(bounds["min"]), float(bounds["max"])
                profile.minimum = low if profile.minimum is None else min(profile.minimum, low)
                profile.maximum = high if profile.maximum is None else max(profile.maximum, high)
                self.total += float(pc.sum(array).as_py() or 0)
        if pa.types.is_nested(array.type) or pa.types.is_binary(array.type):
            return
        counts = pc.value_counts(pc.drop_null(array))
        for value, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            if value in self.values or len(self.values) < MAX_TRACKED:
                self.values[value] += n
            else:
                profile.distinct_capped = True

    def finish(self) -> ColumnProfile:
        profile = self.profile
        profile.distinct = len(self.values)
        profile.top = [(str(v), n) for v, n in self.values.most_common(TOP)]
        if self.numeric and profile.filled:
            profile.mean = self.total / profile.filled
        return profile


def _edges(low: float, high: float) -> np.ndarray:
    return np.linspace(low, high if high > low else low + 1, BINS + 1)


def profile_version(paths: StoragePaths, path: str, batch_rows: int = BATCH_ROWS) -> VersionProfile:
    """Two passes over the version's files: counts, then the numbers' histograms (their range known)."""
    started = time.perf_counter()
    fs, where = paths.filesystem(path)
    data = pads.dataset(where, filesystem=fs, format="parquet")
    tallies = [_Tally(f.name, f.type) for f in data.schema]
    rows = 0
    for batch in data.to_batches(batch_size=batch_rows, **READ_AHEAD):
        rows += batch.num_rows
        for index, tally in enumerate(tallies):
            tally.add(batch.column(index))
    columns = [t.finish() for t in tallies]
    numbers = [c for c in columns if _numeric(data.schema.field(c.name).type) and c.minimum is not None]
    if numbers:
        edges = {c.name: _edges(c.minimum or 0.0, c.maximum or 0.0) for c in numbers}
        counts = {c.name: np.zeros(BINS, dtype=np.int64) for c in numbers}
        for batch in data.to_batches(columns=[c.name for c in numbers], batch_size=batch_rows, **READ_AHEAD):
            for c in numbers:
                values = batch.column(c.name).drop_null().to_numpy(zero_copy_only=False).astype(float)
                counts[c.name] += np.histogram(values, bins=edges[c.name])[0]
        for c in numbers:
            c.histogram = [(float(low), float(high), int(n)) for low, high, n in
                           zip(edges[c.name][:-1], edges[c.name][1:], counts[c.name], strict=True)]
    steps = {c.name[:-len(STATUS_SUFFIX)]: {state: dict(c.top).get(state, 0) for state in STATES}
             for c in columns if c.name.endswith(STATUS_SUFFIX) and c.type == "string"}
    return VersionProfile(rows, columns, steps, time.perf_counter() - started)
