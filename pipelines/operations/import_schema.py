"""The schema of `augment import --key`: every column of the file, typed as the file types it.

Text formats (CSV, JSON Lines) give string fields; Parquet's own types map to ours. Key fields
are required: an imported record without its key could not be identified in later versions.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from pipelines.io.csv_records import csv_records
from pipelines.io.files import EXTENSIONS, text_lines, undecodable
from pipelines.io.json_records import parse_json
from pipelines.spec.errors import pydantic_errors
from pipelines.spec.workflow import (
    RESERVED_COLUMNS,
    FieldSpec,
    FieldType,
    FileKind,
    FileSource,
    SchemaSpec,
)


class ImportRefused(Exception):
    """An import that cannot start: a missing file, an unknown format or key column, a bad name."""


def source_files(fs: pafs.FileSystem, path: str, kind: FileKind) -> list[str]:
    """The files a source path names (itself, or the files of that kind in its folder), sorted."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type != pafs.FileType.Directory:
        raise ImportRefused(f"{path}: no such file or folder")
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
        if f.type == pafs.FileType.File and f.path.rsplit(".", 1)[-1].lower() in EXTENSIONS[kind]
    )
    if not files:
        raise ImportRefused(f"{path}: the folder holds no {kind} file (*.{', *.'.join(EXTENSIONS[kind])})")
    return files


def detect_kind(path: str, given: FileKind | None) -> FileKind:
    """The file format: as given, else from the extension of the file or of the folder's files."""
    if given:
        return given
    suffix = path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)
    for kind, extensions in EXTENSIONS.items():
        if len(suffix) == 2 and suffix[1].lower() in extensions:
            return kind
    raise ImportRefused(f"{path}: cannot tell the format from the name: give --format csv, jsonl or parquet")


def key_schema(source: FileSource, key: list[str], fs: pafs.FileSystem, fs_path: str) -> SchemaSpec:
    """Every column of the source (at `fs_path` in `fs`) as a field, `key` as its required key.
    A `record_uuid` column (a re-imported export) is left out: the id is derived from the key again."""
    columns = {
        name: arrow for name, arrow in _columns(fs, fs_path, source).items() if name not in RESERVED_COLUMNS
    }
    missing = [k for k in key if k not in columns]
    if missing:
        raise ImportRefused(
            f"--key: column(s) {missing} are not in {source.path} (its columns: {', '.join(columns) or 'none'})"
        )
    fields = {
        name: FieldSpec(type=_field_type(arrow), required=name in key) for name, arrow in columns.items()
    }
    try:
        return SchemaSpec(fields=fields, key=key)
    except ValidationError as exc:
        reasons = "; ".join(line.removeprefix("fields: ") for line in pydantic_errors(exc))
        raise ImportRefused(
            f"{source.path}: {reasons} (rename the column, or declare the schema with --schema-from)"
        ) from None


def _columns(fs: pafs.FileSystem, fs_path: str, source: FileSource) -> dict[str, pa.DataType | None]:
    """Column name -> Arrow type (None for text formats), in the file's order."""
    files = source_files(fs, fs_path, source.kind)
    first = files[0]
    if source.kind == "parquet":
        with fs.open_input_file(first) as handle:
            schema = pq.ParquetFile(handle).schema_arrow
        return {field.name: field.type for field in schema}
    if source.kind == "csv":
        with fs.open_input_stream(first) as raw:
            header = next(csv_records(text_lines(raw), source.delimiter), None)
        if header is None:
            raise ImportRefused(f"{first}: empty file, expected a header row")
        if header.cells is None:
            raise ImportRefused(f"{first}: the header row cannot be read: {header.error}")
        return {cell.strip(): None for cell in header.cells if cell.strip()}
    # JSON Lines: the keys of every object, in the order first seen, typed by the values they hold
    # (a column of several types is text); other lines are quarantined later.
    seen: dict[str, set[type]] = {}
    for path in files:
        with fs.open_input_stream(path) as raw:
            for line in text_lines(raw):
                obj = parse_json(line)[0] if line.strip() and undecodable(line) is None else None
                if isinstance(obj, dict):
                    for name, value in obj.items():
                        seen.setdefault(name, set()).update({type(value)} if value is not None else set())
    return {name: _json_column_type(types) for name, types in seen.items()}


def _json_column_type(types: set[type]) -> pa.DataType | None:
    """The Arrow type of a JSON Lines column from the Python types of its values; None for text."""
    if types == {bool}:
        return pa.bool_()
    if types == {int}:
        return pa.int64()
    if types and types <= {int, float}:
        return pa.float64()
    return None


def _field_type(arrow: pa.DataType | None) -> FieldType:
    if arrow is None or pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return FieldType.string
    if pa.types.is_boolean(arrow):
        return FieldType.boolean
    if pa.types.is_integer(arrow):
        return FieldType.integer
    if pa.types.is_floating(arrow) or pa.types.is_decimal(arrow):
        return FieldType.float
    if pa.types.is_date(arrow):
        return FieldType.date
    if pa.types.is_timestamp(arrow):
        return FieldType.datetime
    return FieldType.string  # lists, structs...: kept as their JSON text
