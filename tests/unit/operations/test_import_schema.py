"""The schema of `augment import --key`: every column of the file, typed as the file types it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipelines.operations.import_schema import ImportRefused, key_schema
from pipelines.spec.workflow import FieldType, FileSource


def schema_of(path: Path, kind: str, key: list[str]) -> dict[str, FieldType]:
    source = FileSource(kind=kind, path=str(path))
    schema = key_schema(source, key, pafs.LocalFileSystem(), str(path))
    return {name: field.type for name, field in schema.fields.items()}


def test_json_lines_columns_are_typed_by_their_values(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"sku": "A", "n": 3, "price": 2, "ok": true, "tags": ["x"], "mixed": 1}\n'
        '{"sku": "B", "n": null, "price": 2.5, "ok": false, "mixed": "one"}\n'
        'not json\n\n{"sku": "C", "late": 7}\n'
    )
    assert schema_of(path, "jsonl", ["sku"]) == {
        "sku": FieldType.string, "n": FieldType.integer, "price": FieldType.float, "ok": FieldType.boolean,
        "tags": FieldType.string, "mixed": FieldType.string, "late": FieldType.integer,
    }


def test_a_csv_header_is_read_with_the_record_reader(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('id,"a, quoted name",x\n1,2,3\n')
    with pytest.raises(ImportRefused, match="'a, quoted name'"):  # not a column name: the reason says so
        schema_of(path, "csv", ["id"])
