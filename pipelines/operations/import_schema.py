"""The schema of `augment import --key`: every column of the file, typed as the file types it.

Text formats (CSV, JSON Lines) give string fields; Parquet's own types map to ours. Key fields
are required: an imported record without its key could not be identified in later versions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from pipelines.io.files import EXTENSIONS, SourceError, text_lines
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
        for row in csv.reader(_lines(fs, first), delimiter=source.delimiter):
            return {cell.strip(): None for cell in row if cell.strip()}
        raise ImportRefused(f"{first}: empty file, expected a header row")
    # JSON Lines: the keys of every object, in the order first seen; other lines are quarantined later.
    names: dict[str, None] = {}
    for path in files:
        for line in _lines(fs, path):
            try:
                obj = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                names.update(dict.fromkeys(obj))
    return names


def _lines(fs: pafs.FileSystem, path: str) -> Iterator[str]:
    with fs.open_input_stream(path) as raw:
        try:
            yield from text_lines(raw, path)
        except SourceError as exc:
            raise ImportRefused(str(exc)) from None


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
