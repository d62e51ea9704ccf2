"""lookup: columns brought from a reference table (CSV or Parquet) by key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from augment_core.storage import filesystem_for
from pipelines.augmenters.base import Augmenter, AugmenterParams, plain
from pipelines.augmenters.registry import register
from pipelines.spec.base import IDENTIFIER


class ReferenceTableError(ValueError):
    """The reference table cannot serve this lookup: a configuration error, raised at setup."""


class LookupParams(AugmenterParams):
    reference: str = Field(
        min_length=1, max_length=4096, description="A .csv, .csv.gz, .parquet or .pq file, local or s3://."
    )
    column: str = Field(pattern=IDENTIFIER, description="The records' key column, matched by its string form.")
    reference_key: str | None = Field(default=None, min_length=1, description="The reference's key; default: column.")
    columns: list[str] = Field(min_length=1, max_length=100, description="The reference columns to bring.")
    prefix: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9_]{0,47})?$", description="Start of the added names.")
    case_insensitive: bool = Field(default=False, description="Match keys ignoring case.")

    @model_validator(mode="after")
    def _outputs_are_column_names(self) -> "LookupParams":
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns lists a column more than once")
        for column in self.columns:
            if not re.match(IDENTIFIER, self.prefix + column):
                raise ValueError(f"{self.prefix + column!r} is not a valid column name to add; set a prefix")
        return self


@register("lookup")
class Lookup(Augmenter):
    """Joins each record to at most one reference row. Keys compare as trimmed strings (optionally
    ignoring case); blank keys never match; a record without a match gets nulls. Reference values
    are read as strings, exactly as written ("007" stays "007"); only an empty CSV cell is null.

    Reads: `column` (any type; its string form, e.g. 42 -> "42").
    Adds: `{prefix}{column}` (string) for each of `columns`.
    """

    Params = LookupParams
    params: LookupParams
    path_params = ("reference",)
    string_inputs = False

    def __init__(self, params: LookupParams, step_name: str, overwrite: bool = False) -> None:
        super().__init__(params, step_name, overwrite)
        self._keys: pa.Array | None = None  # the reference's normalised keys, unique
        self._values: dict[str, pa.Array] = {}  # each brought column, aligned with _keys
        self._rows: dict[str, int] | None = None  # normalised key -> its row, for process_values
        self._python: dict[str, list[str | None]] = {}  # _values as Python lists

    def reads(self) -> list[tuple[str, str]]:
        return [("column", self.params.column)]

    def adds(self) -> dict[str, pa.DataType]:
        return {self.params.prefix + column: pa.string() for column in self.params.columns}

    def setup(self) -> None:
        where = f"reference {self.params.reference}"
        table = _read(self.params.reference)
        key = self.params.reference_key or self.params.column
        missing = [c for c in dict.fromkeys([key, *self.params.columns]) if c not in table.column_names]
        if missing:
            raise ReferenceTableError(f"{where}: no column(s) {missing}; it has {table.column_names}")
        try:
            table = pa.table({c: table[c].cast(pa.string()) for c in dict.fromkeys([key, *self.params.columns])})
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ReferenceTableError(f"{where}: a column cannot be read as strings: {exc}") from None
        keys = self._normalise(table[key])
        table, keys = table.filter(pc.is_valid(keys)), keys.filter(pc.is_valid(keys))
        counts = pc.value_counts(keys)
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        if len(repeated):
            raise ReferenceTableError(f"{where}: key {key!r} is not unique, e.g. {repeated[:5].to_pylist()}")
        self._keys = keys.combine_chunks()
        self._values = {c: table[c].combine_chunks() for c in self.params.columns}
        self._rows = None

    def process_batch(self, batch: pd.DataFrame) -> dict[str, pd.Series]:
        joined = self.joined(pa.array(batch[self.params.column]))
        return {column: pd.Series(pd.arrays.ArrowExtensionArray(values)) for column, values in joined.items()}

    def process_arrow(self, batch: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray] | None:
        keys = batch.column(self.params.column)
        return self.joined(keys.combine_chunks()) if plain(keys.type) else None

    def process_values(self, columns: Mapping[str, list[Any]],
                       types: Mapping[str, pa.DataType]) -> dict[str, list[str | None]] | None:
        # Keys whose normalising Python does exactly as the kernels: ASCII (lower() is utf8_lower
        # there), and no whitespace at either end (utf8_trim_whitespace leaves them as they are).
        keys = columns[self.params.column]
        if not pa.types.is_string(types[self.params.column]) or not all(k is None or _plain_key(k) for k in keys):
            return None
        if self._rows is None:
            if self._keys is None:
                self.setup()
            assert self._keys is not None
            # _rows last: a thread that finds it set finds _python set too.
            self._python = {c: values.to_pylist() for c, values in self._values.items()}
            self._rows = {key: row for row, key in enumerate(self._keys.to_pylist())}
        lower = self.params.case_insensitive
        rows = [None if not k else self._rows.get(k.lower() if lower else k) for k in keys]
        return {self.params.prefix + c: [None if row is None else values[row] for row in rows]
                for c, values in self._python.items()}

    def joined(self, keys: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array | pa.ChunkedArray]:
        """The brought columns for the records' keys: null where nothing matches."""
        if self._keys is None:
            self.setup()  # called without the runner's setup: load on first use
        rows = pc.index_in(self._normalise(pc.cast(keys, pa.string())), value_set=self._keys)  # a hash join
        return {self.params.prefix + c: values.take(rows) for c, values in self._values.items()}

    def _normalise(self, keys: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        keys = pc.utf8_trim_whitespace(keys)
        keys = pc.if_else(pc.equal(keys, ""), None, keys)
        return pc.utf8_lower(keys) if self.params.case_insensitive else keys


def _plain_key(key: str) -> bool:
    return key.isascii() and (not key or not (key[0].isspace() or key[-1].isspace()))


def _read(path: str) -> pa.Table:
    """The reference table; CSV cells all as strings, so nothing is guessed ("007", "NA" stay)."""
    if not path.endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        raise ReferenceTableError(f"reference {path}: unsupported format (use .csv, .csv.gz, .parquet or .pq)")
    fs, fs_path = filesystem_for(path)
    try:
        if path.endswith((".parquet", ".pq")):
            return pq.read_table(fs_path, filesystem=fs)
        with fs.open_input_stream(fs_path, compression="detect") as stream:
            data = stream.read()
        names = pacsv.open_csv(pa.BufferReader(data)).schema.names
        options = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True
        )
        return pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    except FileNotFoundError:
        raise ReferenceTableError(f"reference {path}: file not found") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReferenceTableError(f"reference {path}: cannot be read: {exc}") from None
