"""File sources read row-exactly: every row comes out, malformed ones with `_parse_error`.

The readers are driven through `_read_stream` on a datasource built without its Ray base
initialiser (which resolves paths and starts a local Ray instance); the parsing needs neither.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.io.sources as sources
from pipelines.io.files import SourceError
from pipelines.io.json_records import json_record, text_value
from pipelines.io.sources import RecordFileDatasource, postgres_connector
from pipelines.spec.workflow import PostgresSource, SchemaSpec

FIELDS = {"org_id": {"required": True}, "name": {}, "employees": {"type": "integer"}}
SOURCE_COLUMNS = ["_source", "_source_row", "_source_order", "_parse_error"]


def datasource(kind: str, fields: dict[str, Any] | None = None, delimiter: str = ",") -> RecordFileDatasource:
    ds = RecordFileDatasource.__new__(RecordFileDatasource)
    ds.kind, ds.delimiter, ds.keep_columns = kind, delimiter, ()
    ds.schema_spec = SchemaSpec.model_validate({"fields": fields or FIELDS})
    return ds


def read_tables(path: Path, kind: str, fields: dict[str, Any] | None = None, delimiter: str = ",") -> list[pa.Table]:
    # Opened as the datasource opens it: Parquet with random access, text formats as a stream.
    source = pa.OSFile(str(path)) if kind == "parquet" else pa.input_stream(str(path))
    return list(datasource(kind, fields, delimiter)._read_stream(source, str(path)))


def read_rows(path: Path, kind: str, fields: dict[str, Any] | None = None, delimiter: str = ",") -> list[dict]:
    tables = read_tables(path, kind, fields, delimiter)
    return [row for table in tables for row in table.to_pylist()]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def values(rows: list[dict], *names: str) -> list[tuple]:
    return [tuple(r[n] for n in names) for r in rows]


# CSV -----------------------------------------------------------------------------------------------
def test_csv_rows_come_out_as_text_with_where_they_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "orgs.csv", "org_id,name,employees\nORG-1,Acme,12\nORG-2,Beta,\n")
    (table,) = read_tables(path, "csv")
    assert table.column_names == ["org_id", "name", "employees", *SOURCE_COLUMNS]
    assert all(table.schema.field(n).type == pa.string() for n in ("org_id", "name", "employees"))
    assert table.to_pylist() == [
        {"org_id": "ORG-1", "name": "Acme", "employees": "12", "_source": str(path), "_source_row": 1,
         "_source_order": f"{path}\x1f000000000000001", "_parse_error": None},
        {"org_id": "ORG-2", "name": "Beta", "employees": "", "_source": str(path), "_source_row": 2,
         "_source_order": f"{path}\x1f000000000000002", "_parse_error": None},
    ]


def test_csv_columns_are_matched_by_header_name_not_position(tmp_path: Path) -> None:
    path = write(tmp_path, "orgs.csv", " employees ,extra, org_id ,name\n12,x,ORG-1,Acme\n")
    rows = read_rows(path, "csv")
    assert values(rows, "org_id", "name", "employees") == [("ORG-1", "Acme", "12")]
    assert "extra" not in rows[0]


def test_csv_byte_order_mark_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbforg_id,name\r\nORG-1,Acme\r\n")
    assert values(read_rows(path, "csv"), "org_id", "name") == [("ORG-1", "Acme")]


def test_csv_quoted_cells_keep_newlines_commas_and_quotes(tmp_path: Path) -> None:
    text = 'org_id,name\r\nORG-1,"Acme, Inc."\r\nORG-2,"two\r\nlines"\r\nORG-3,"say ""hi"""\r\nORG-4,Last\r\n'
    rows = read_rows(write(tmp_path, "q.csv", text), "csv")
    assert values(rows, "org_id", "name", "_source_row") == [
        ("ORG-1", "Acme, Inc.", 1), ("ORG-2", "two\r\nlines", 2), ("ORG-3", 'say "hi"', 3), ("ORG-4", "Last", 4),
    ]


def test_csv_unicode_values(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", "org_id,name\nORG-1,Société Générale\nORG-2,株式会社トヨタ 🚗\n")
    assert values(read_rows(path, "csv"), "name") == [("Société Générale",), ("株式会社トヨタ 🚗",)]


def test_csv_blank_lines_are_not_records_and_not_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "org_id,name\n\nORG-1,Acme\n   \nORG-2,Beta\n\n")
    rows = read_rows(path, "csv")
    assert values(rows, "org_id", "_source_row") == [("ORG-1", 1), ("ORG-2", 2)]


def test_csv_a_row_of_empty_cells_is_a_record_refused_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "org_id,name,employees\nORG-1,Acme,1\n,,\n , ,\nORG-4,Delta,4\n")
    rows = read_rows(path, "csv")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        ("ORG-1", 1, None),
        (None, 2, "blank row: all 3 cells are empty"),
        (None, 3, "blank row: all 3 cells are empty"),
        ("ORG-4", 4, None),  # the rows after them keep their numbers
    ]


def test_csv_row_with_wrong_cell_count_is_kept_as_a_parse_error(tmp_path: Path) -> None:
    text = "org_id,name\nORG-1,Acme\nORG-2,Beta,extra\nORG-3\nORG-4,Delta\n"
    rows = read_rows(write(tmp_path, "w.csv", text), "csv")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        ("ORG-1", 1, None),
        (None, 2, 'malformed CSV row: 3 cells, header has 2: ["ORG-2", "Beta", "extra"]'),
        (None, 3, 'malformed CSV row: 1 cells, header has 2: ["ORG-3"]'),
        ("ORG-4", 4, None),  # numbering continues after the bad rows
    ]


def test_csv_stray_quote_is_kept_as_a_parse_error_and_reading_goes_on(tmp_path: Path) -> None:
    text = 'org_id,name\nORG-1,Acme\nORG-2,"Beta"x\nORG-3,Gamma\n'
    rows = read_rows(write(tmp_path, "s.csv", text), "csv")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        ("ORG-1", 1, None),
        (None, 2, "malformed CSV near line 3: ',' expected after '\"'"),
        ("ORG-3", 3, None),
    ]


def test_csv_unclosed_quote_at_the_end_is_a_parse_error(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path, "u.csv", 'org_id,name\nORG-1,Acme\nORG-2,"Beta\n'), "csv")
    assert values(rows, "org_id", "_parse_error") == [
        ("ORG-1", None), (None, "malformed CSV near line 3: unexpected end of data"),
    ]


def test_csv_missing_required_column_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "id,name\nORG-1,Acme\n")
    with pytest.raises(SourceError) as info:
        read_rows(path, "csv")
    assert str(info.value) == f"{path}: required column(s) ['org_id'] are missing; the file has ['id', 'name']"


def test_csv_missing_optional_column_gives_nulls(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path, "o.csv", "org_id\nORG-1\nORG-2\n"), "csv")
    assert values(rows, "org_id", "name", "employees") == [("ORG-1", None, None), ("ORG-2", None, None)]


def test_csv_other_delimiter(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path, "d.csv", "org_id;name\nORG-1;Acme, Inc.\n"), "csv", delimiter=";")
    assert values(rows, "org_id", "name") == [("ORG-1", "Acme, Inc.")]


def test_csv_a_row_that_is_not_utf8_is_refused_alone_with_its_bytes(tmp_path: Path) -> None:
    text = "org_id,name\nORG-1,Acme\n".encode() + "ORG-2,Société\n".encode("latin-1") + b"ORG-3,Gamma\n"
    rows = read_rows(write(tmp_path, "latin1.csv", text), "csv")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        ("ORG-1", 1, None),
        (None, 2, "not valid UTF-8 (invalid continuation byte at byte 10 of the row): ORG-2,Soci\\xe9t\\xe9"),
        ("ORG-3", 3, None),
    ]


def test_csv_header_that_is_not_utf8_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "org_id,nàme\nORG-1,x\n".encode("latin-1"))
    with pytest.raises(SourceError) as info:
        read_rows(path, "csv")
    assert str(info.value).startswith(f"{path}: the header row cannot be read: not valid UTF-8 (")


def test_csv_an_unclosed_quote_costs_only_its_own_row(tmp_path: Path) -> None:
    text = 'org_id,name\nORG-1,"Acme\nORG-2,Beta\nORG-3,"Gamma, ""the third""\nand more"\nORG-4,Delta\n'
    rows = read_rows(write(tmp_path, "q.csv", text), "csv")
    assert values(rows, "org_id", "name", "_source_row", "_parse_error") == [
        (None, None, 1, "malformed CSV near line 2: unexpected end of data"),
        ("ORG-2", "Beta", 2, None),  # read as itself, not swallowed by the open quote
        ("ORG-3", 'Gamma, "the third"\nand more', 3, None),  # a quoted line break is one record
        ("ORG-4", "Delta", 4, None),
    ]


def test_csv_rows_are_numbered_as_data_rows_after_a_bom_crlf_and_quoted_line_breaks(tmp_path: Path) -> None:
    text = ('\ufefforg_id,name\r\nORG-1,"two\r\nlines"\r\n\r\nORG-2,Beta\r\nORG-3,"Ga""mma"\r\n'
            'ORG-x,a,b\r\nORG-5,Eps\r\n')
    rows = read_rows(write(tmp_path, "n.csv", text), "csv")
    assert values(rows, "org_id", "name", "_source_row") == [
        ("ORG-1", "two\r\nlines", 1), ("ORG-2", "Beta", 2), ("ORG-3", 'Ga"mma', 3), (None, None, 4),
        ("ORG-5", "Eps", 5),
    ]


def test_csv_a_quote_inside_a_cell_is_text(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path, "i.csv", 'org_id,name\nORG-1,5" screen\nORG-2,Beta\n'), "csv")
    assert values(rows, "org_id", "name", "_source_row") == [("ORG-1", '5" screen', 1), ("ORG-2", "Beta", 2)]


def test_csv_a_cell_of_10_mb_is_read(tmp_path: Path) -> None:
    big = "x" * 10_000_000
    rows = read_rows(write(tmp_path, "big.csv", f"org_id,name\nORG-1,{big}\nORG-2,Beta\n"), "csv")
    assert [len(r["name"]) for r in rows] == [10_000_000, 4]


@pytest.mark.parametrize("cell", ["x" * 2000, '"' + "x" * 2000 + '"'], ids=["plain", "quoted"])
def test_csv_a_cell_past_the_limit_quarantines_its_row_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cell: str) -> None:
    import pipelines.io.csv_records as csv_records

    monkeypatch.setattr(csv_records, "MAX_CELL_CHARS", 1000)
    rows = read_rows(write(tmp_path, "big.csv", f"org_id,name\nORG-1,{cell}\nORG-2,Beta\n"), "csv")
    assert values(rows, "org_id", "_parse_error") == [
        (None, "malformed CSV near line 2: a cell is longer than 1,000 characters, the most a CSV cell may hold"),
        ("ORG-2", None),
    ]


def test_csv_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.csv", "")
    with pytest.raises(SourceError) as info:
        read_rows(path, "csv")
    assert str(info.value) == f"{path}: empty file, expected a header row"


def test_csv_with_only_a_header_has_no_rows(tmp_path: Path) -> None:
    assert read_tables(write(tmp_path, "h.csv", "org_id,name\n"), "csv") == []


def test_csv_rows_are_numbered_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", 2)
    lines = ["org_id,name"] + [f"ORG-{i},N{i}" for i in range(1, 6)]
    lines.insert(3, "ORG-x,too,many")
    tables = read_tables(write(tmp_path, "n.csv", "\n".join(lines) + "\n"), "csv")
    assert [t.num_rows for t in tables] == [2, 2, 2]
    rows = [r for t in tables for r in t.to_pylist()]
    assert [r["_source_row"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["org_id"] for r in rows] == ["ORG-1", "ORG-2", None, "ORG-3", "ORG-4", "ORG-5"]
    orders = [r["_source_order"] for r in rows]
    assert orders == sorted(orders)


# JSON Lines ------------------------------------------------------------------------------------------
def test_jsonl_values_of_other_fields_become_the_text_a_csv_would_hold(tmp_path: Path) -> None:
    fields = {"org_id": {"required": True}, "name": {"type": "boolean"}, "employees": {"type": "integer"}}
    lines = [
        {"org_id": "ORG-1", "name": "Acme", "employees": 12},
        {"org_id": "ORG-2", "name": True, "employees": 12.0},
        {"org_id": "ORG-3", "name": {"b": [1, 2], "a": "é"}, "employees": None},
        {"org_id": "ORG-4", "other": "ignored"},
    ]
    path = write(tmp_path, "o.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    (table,) = read_tables(path, "jsonl", fields)
    assert table.column_names == ["org_id", "name", "employees", *SOURCE_COLUMNS]
    assert all(table.schema.field(n).type == pa.string() for n in ("org_id", "name", "employees"))
    assert values(table.to_pylist(), "org_id", "name", "employees", "_source_row") == [
        ("ORG-1", "Acme", "12", 1),
        ("ORG-2", "true", "12.0", 2),
        ("ORG-3", '{"a": "é", "b": [1, 2]}', None, 3),
        ("ORG-4", None, None, 4),
    ]


def test_jsonl_bad_lines_are_kept_as_parse_errors(tmp_path: Path) -> None:
    text = '{"org_id": "ORG-1"}\n{"org_id": "ORG-2",}\n\n[1, 2]\n"text"\n{"org_id": "ORG-5"}\n'
    rows = read_rows(write(tmp_path, "b.jsonl", text), "jsonl")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        ("ORG-1", 1, None),
        (None, 2, 'invalid JSON: Expecting property name enclosed in double quotes at column 20: {"org_id": "ORG-2",}'),
        (None, 3, "expected a JSON object, got list"),
        (None, 4, "expected a JSON object, got str"),
        ("ORG-5", 5, None),
    ]


def test_jsonl_bom_crlf_and_unicode(tmp_path: Path) -> None:
    path = write(tmp_path, "u.jsonl", '\ufeff{"org_id": "ORG-1", "name": "Zoë"}\r\n{"org_id": "ORG-2"}\r\n')
    assert values(read_rows(path, "jsonl"), "org_id", "name") == [("ORG-1", "Zoë"), ("ORG-2", None)]


def test_jsonl_a_line_that_is_not_utf8_is_refused_alone(tmp_path: Path) -> None:
    text = '{"org_id": "ORG-1", "name": "Société"}\n'.encode("latin-1") + b'{"org_id": "ORG-2"}\n'
    rows = read_rows(write(tmp_path, "l.jsonl", text), "jsonl")
    assert values(rows, "org_id", "_source_row") == [(None, 1), ("ORG-2", 2)]
    assert rows[0]["_parse_error"].startswith("not valid UTF-8 (invalid continuation byte at byte 33 of the row): ")


def test_jsonl_a_string_field_refuses_a_number_with_a_type_reason(tmp_path: Path) -> None:
    text = '{"org_id": 17, "name": "Acme"}\n{"org_id": "ORG-2", "name": ["x"]}\n{"org_id": "ORG-3"}\n'
    rows = read_rows(write(tmp_path, "t.jsonl", text), "jsonl")
    assert values(rows, "org_id", "_source_row", "_parse_error") == [
        (None, 1, "org_id: expected a string, got number 17"),
        (None, 2, 'name: expected a string, got array ["x"]'),
        ("ORG-3", 3, None),
    ]


def test_jsonl_a_truncated_last_line_says_so_with_its_line_number(tmp_path: Path) -> None:
    text = '{"org_id": "ORG-1"}\n\n{"org_id": "ORG-2", "na'
    rows = read_rows(write(tmp_path, "cut.jsonl", text), "jsonl")
    assert values(rows, "org_id", "_source_row") == [("ORG-1", 1), (None, 2)]
    assert rows[1]["_parse_error"] == (
        'line 3 is cut short (the file ends inside it): Unterminated string starting at column 21:'
        ' {"org_id": "ORG-2", "na')


def test_jsonl_a_last_line_that_breaks_a_rule_is_invalid_not_cut_short(tmp_path: Path) -> None:
    rows = read_rows(write(tmp_path, "bad.jsonl", '{"org_id": "ORG-1"}\n{"org_id": "ORG-2",}'), "jsonl")
    assert rows[1]["_parse_error"].startswith("invalid JSON: Expecting property name")


@pytest.mark.parametrize(("line", "reason"), [
    ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
    ('{"org_id": ' + "1" * 5000 + "}", "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"),
])
def test_jsonl_beyond_the_parsers_limits_is_a_reason_not_a_crash(tmp_path: Path, line: str, reason: str) -> None:
    rows = read_rows(write(tmp_path, "deep.jsonl", line + '\n{"org_id": "ORG-2"}\n'), "jsonl")
    assert values(rows, "org_id", "_source_row") == [(None, 1), ("ORG-2", 2)]
    assert rows[0]["_parse_error"].startswith(reason)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, None), ("x", "x"), ("", ""), (True, "true"), (False, "false"), (0, "0"), (-12, "-12"),
     (1.5, "1.5"), (12.0, "12.0"), ([1, "a"], '[1, "a"]'), ({"b": 1, "a": None}, '{"a": null, "b": 1}'),
     ({"k": "ü"}, '{"k": "ü"}')],
)
def test_text_value(value: Any, text: str | None) -> None:
    assert text_value(value) == text


# Parquet ---------------------------------------------------------------------------------------------
def test_parquet_typed_columns_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "o.parquet"
    when = dt.datetime(2024, 1, 5, 10, 30)
    pq.write_table(
        pa.table({
            "org_id": ["ORG-1", "ORG-2"],
            "employees": pa.array([12, None], pa.int64()),
            "seen_at": pa.array([when, when], pa.timestamp("us")),
            "unused": [1, 2],
        }),
        path,
    )
    fields = {**FIELDS, "seen_at": {"type": "datetime"}}
    (table,) = read_tables(path, "parquet", fields)
    assert table.schema.field("employees").type == pa.int64()
    assert table.schema.field("seen_at").type == pa.timestamp("us")
    assert table.schema.field("name").type == pa.string()  # absent optional column: nulls
    assert "unused" not in table.column_names
    assert set(table.column_names) == {*fields, *SOURCE_COLUMNS}
    assert values(table.to_pylist(), "org_id", "name", "employees", "seen_at", "_source_row", "_parse_error") == [
        ("ORG-1", None, 12, when, 1, None), ("ORG-2", None, None, when, 2, None),
    ]


def test_parquet_rows_are_numbered_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", 2)
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"org_id": [f"ORG-{i}" for i in range(1, 6)]}), path, row_group_size=3)
    tables = read_tables(path, "parquet")
    assert sum(t.num_rows for t in tables) == 5 and len(tables) >= 3
    rows = [r for t in tables for r in t.to_pylist()]
    assert values(rows, "org_id", "_source_row") == [(f"ORG-{i}", i) for i in range(1, 6)]
    assert [r["_source_order"] for r in rows] == [f"{path}\x1f{i:015d}" for i in range(1, 6)]


@pytest.mark.parametrize(("content", "reason"), [
    (b"org_id,name\nORG-1,Acme\n", "Parquet magic bytes not found in footer"),
    (b"", "Parquet file size is 0 bytes"),
])
def test_a_file_that_is_not_parquet_is_refused_in_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path, "orgs.parquet", content)
    with pytest.raises(SourceError) as info:
        read_rows(path, "parquet")
    assert str(info.value) == f"{path}: not a Parquet file ({reason})"


def test_parquet_missing_required_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["ORG-1"], "name": ["Acme"]}), path)
    with pytest.raises(SourceError) as info:
        read_rows(path, "parquet")
    assert str(info.value) == f"{path}: required column(s) ['org_id'] are missing; the file has ['id', 'name']"


def test_parquet_without_any_declared_column_still_counts_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"other": [1, 2, 3]}), path)
    rows = read_rows(path, "parquet", {"name": {}})
    assert values(rows, "name", "_source_row") == [(None, 1), (None, 2), (None, 3)]


def test_jsonl_lone_surrogate_is_a_parse_error_of_its_row_only(tmp_path: Path) -> None:
    text = '{"org_id": "ORG-1", "name": "Acme"}\n{"org_id": "ORG-2", "name": "bad \\ud800"}\n{"org_id": "ORG-3"}\n'
    rows = read_rows(write(tmp_path, "s.jsonl", text), "jsonl")
    assert values(rows, "org_id", "_source_row") == [("ORG-1", 1), (None, 2), ("ORG-3", 3)]
    assert rows[1]["_parse_error"] == "name: not valid Unicode (lone surrogate '\\ud800' at character 4)"


def test_json_record_is_shared_by_files_and_requests() -> None:
    schema = SchemaSpec.model_validate({"fields": {"a": {"type": "integer"}, "b": {}}})
    assert json_record({"a": 1, "b": None, "c": "x"}, schema) == ({"a": "1", "b": None}, None)
    assert json_record(["a"], schema) == ({}, "expected a JSON object, got list")
    assert json_record({"a": {"k": "\udfff"}}, schema)[1].startswith("a: not valid Unicode")


@pytest.mark.parametrize(("value", "reason"), [
    (12, "b: expected a string, got number 12"), (1.5, "b: expected a string, got number 1.5"),
    (True, "b: expected a string, got boolean true"), ([1], "b: expected a string, got array [1]"),
    ({"k": 1}, 'b: expected a string, got object {"k": 1}'),
])
def test_a_string_field_takes_only_a_json_string(value: Any, reason: str) -> None:
    schema = SchemaSpec.model_validate({"fields": {"a": {"type": "integer"}, "b": {}}})
    assert json_record({"a": 1, "b": value}, schema) == ({}, reason)


@pytest.mark.parametrize(
    "dsn",
    ["postgresql//augment:s3cr3t-pw@db/augment", "host=db password=s3cr3t pw", "postgresql://augment:s3cr3t-pw@127.0.0.1:9/x"],
)
def test_postgres_connection_errors_never_quote_the_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUGMENT_TEST_DSN", dsn)
    connect = postgres_connector(PostgresSource(kind="postgres", query="select 1", dsn_env="AUGMENT_TEST_DSN"))
    with pytest.raises(SourceError) as info:
        connect()
    message = str(info.value)
    assert "$AUGMENT_TEST_DSN" in message and "s3cr3t" not in message and dsn not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_postgres_source_without_its_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUGMENT_TEST_DSN", raising=False)
    with pytest.raises(SourceError, match="AUGMENT_TEST_DSN is not set"):
        postgres_connector(PostgresSource(kind="postgres", query="select 1", dsn_env="AUGMENT_TEST_DSN"))


# a PostgreSQL source is read-only and bounded in time ---------------------------------------
def _pg_source(postgres_url: str, monkeypatch: pytest.MonkeyPatch, **bounds: Any) -> PostgresSource:
    monkeypatch.setenv("AUGMENT_TEST_DSN", postgres_url)
    return PostgresSource(kind="postgres", query="select 1", dsn_env="AUGMENT_TEST_DSN", **bounds)


@pytest.mark.parametrize("statement", [
    "CREATE TABLE augment_source_must_not_write (a int)",
    "SELECT nextval('augment_source_seq')",  # a write hidden in a function call of a plain SELECT
])
def test_a_postgres_source_that_writes_is_refused_saying_so(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, statement: str
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("CREATE SEQUENCE IF NOT EXISTS augment_source_seq")
    connection = postgres_connector(_pg_source(postgres_url, monkeypatch))()
    try:
        with pytest.raises(SourceError, match="the query tried to write; sources are read in a read-only transaction"):
            connection.cursor().execute(statement)
    finally:
        connection.close()
    with psycopg.connect(postgres_url) as admin:
        found = admin.execute("SELECT to_regclass('augment_source_must_not_write')").fetchone()
    assert found == (None,)


def test_a_postgres_source_query_past_its_timeout_is_cancelled_saying_so(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = postgres_connector(_pg_source(postgres_url, monkeypatch, statement_timeout_seconds=0.05))()
    try:
        with pytest.raises(SourceError, match=r"ran longer than statement_timeout_seconds \(0.05s\) and was cancelled"):
            connection.cursor().execute("SELECT pg_sleep(30)")
    finally:
        connection.close()


def test_a_postgres_source_reads_as_before(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = postgres_connector(_pg_source(postgres_url, monkeypatch))()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1 AS one, current_setting('transaction_read_only') AS ro")
        assert cursor.fetchall() == [(1, "on")]
    finally:
        connection.close()
