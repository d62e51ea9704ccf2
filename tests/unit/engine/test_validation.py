"""Per-record validation: coercion of raw values, constraints, record ids and whole batches."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pyarrow as pa
import pytest

from pipelines.engine.validation import (
    RECORD_NAMESPACE,
    CoercionError,
    check_constraints,
    coerce,
    record_uuid,
    validate_record,
    validate_table,
)
from pipelines.spec.workflow import FieldSpec, SchemaSpec, missing_required_columns

UTC = dt.timezone.utc


def field(**kwargs: Any) -> FieldSpec:
    return FieldSpec(**kwargs)


def coerced(value: Any, **kwargs: Any) -> Any:
    return coerce(value, field(**kwargs))


def refused(value: Any, **kwargs: Any) -> str:
    with pytest.raises(CoercionError) as info:
        coerce(value, field(**kwargs))
    return str(info.value)


# blanks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field_type", ["string", "integer", "float", "boolean", "date", "datetime"])
@pytest.mark.parametrize("blank", [None, "", "   ", "\t\r\n", "\u00a0", float("nan")])
def test_blank_values_are_missing_for_every_type(field_type: str, blank: Any) -> None:
    assert coerced(blank, type=field_type) is None


# string --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Acme Ltd  ", "Acme Ltd"),
        ("Société Générale 株式会社 🚀", "Société Générale 株式会社 🚀"),
        ("\u00a0padded\u3000", "padded"),  # Unicode spaces are trimmed too
        ("line one\nline two", "line one\nline two"),  # inner whitespace is kept
        (42, "42"),
        (1.5, "1.5"),
        ({"b": 1, "a": ["é"]}, '{"a": ["é"], "b": 1}'),
        ([1, 2], "[1, 2]"),
        (True, "true"),  # as a JSON Lines file or a request gives it: one record, one value
        (False, "false"),
    ],
)
def test_string(raw: Any, expected: str) -> None:
    assert coerced(raw) == expected


# integer --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), (" 12 ", 12), ("+7", 7), ("-3", -3), ("12.0", 12), ("12.", 12), ("0012", 12),
     ("9223372036854775807", 2**63 - 1), (12, 12), (12.0, 12), (-0.0, 0)],
)
def test_integer_accepts(raw: Any, expected: int) -> None:
    value = coerced(raw, type="integer")
    assert value == expected and type(value) is int


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1,200", "expected an integer, got '1,200'"),
        ("1 200", "expected an integer, got '1 200'"),
        ("12.5", "expected an integer, got '12.5'"),
        ("1e3", "expected an integer, got '1e3'"),
        ("twelve", "expected an integer, got 'twelve'"),
        ("0x1F", "expected an integer, got '0x1F'"),
        ("--1", "expected an integer, got '--1'"),
        (12.5, "expected an integer, got 12.5"),
        (float("inf"), "expected an integer, got inf"),
        (True, "expected an integer, got boolean True"),
        (False, "expected an integer, got boolean False"),
    ],
)
def test_integer_refuses(raw: Any, reason: str) -> None:
    assert refused(raw, type="integer") == reason


# float ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1.5", 1.5), (" -2.25 ", -2.25), ("1e3", 1000.0), ("3", 3.0), (".5", 0.5), (3, 3.0), (2.5, 2.5)],
)
def test_float_accepts(raw: Any, expected: float) -> None:
    value = coerced(raw, type="float")
    assert value == expected and type(value) is float


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1,5", "expected a number, got '1,5'"),
        ("abc", "expected a number, got 'abc'"),
        ("nan", "expected a finite number, got 'nan'"),
        ("inf", "expected a finite number, got 'inf'"),
        ("-Infinity", "expected a finite number, got '-Infinity'"),
        ("1e999", "expected a finite number, got '1e999'"),
        (float("inf"), "expected a finite number, got inf"),  # native values obey the same rule as text
        (10**400, f"expected a number, got {10**400!r}"),
        (True, "expected a number, got boolean True"),
    ],
)
def test_float_refuses(raw: Any, reason: str) -> None:
    assert refused(raw, type="float") == reason


# boolean ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("t", True), ("Yes", True), ("y", True), ("1", True), (" yes ", True),
     ("false", False), ("F", False), ("no", False), ("N", False), ("0", False),
     (True, True), (False, False), (1, True), (0, False)],
)
def test_boolean_accepts(raw: Any, expected: bool) -> None:
    assert coerced(raw, type="boolean") is expected


@pytest.mark.parametrize("raw", ["maybe", "on", "off", "2", "oui", 2, 1.0])
def test_boolean_refuses(raw: Any) -> None:
    assert refused(raw, type="boolean") == f"expected a boolean (true/false/yes/no/1/0), got {raw!r}"


# date and datetime --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("2024-02-29", dt.date(2024, 2, 29)), (" 2024-01-05 ", dt.date(2024, 1, 5)),
     (dt.date(2024, 1, 5), dt.date(2024, 1, 5)), (dt.datetime(2024, 1, 5, 23, 59), dt.date(2024, 1, 5))],
)
def test_date_accepts(raw: Any, expected: dt.date) -> None:
    value = coerced(raw, type="date")
    assert value == expected and type(value) is dt.date


@pytest.mark.parametrize("raw", ["2023-02-29", "05/01/2024", "2024-1-5", "2024-01-05T10:00:00", "yesterday"])
def test_date_refuses(raw: str) -> None:
    assert refused(raw, type="date") == f"expected a date as YYYY-MM-DD, got {raw!r}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-05T10:30:00", dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),  # naive: taken as UTC
        ("2024-01-05 10:30", dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),
        ("2024-01-05T10:30:00Z", dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),
        ("2024-01-05T12:30:00+02:00", dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),  # converted to UTC
        ("2024-01-05", dt.datetime(2024, 1, 5, tzinfo=UTC)),
        (dt.datetime(2024, 1, 5, 10, 30), dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),
        (dt.datetime(2024, 1, 5, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
         dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)),
    ],
)
def test_datetime_accepts(raw: Any, expected: dt.datetime) -> None:
    value = coerced(raw, type="datetime")
    assert value == expected
    assert value.tzinfo == UTC


@pytest.mark.parametrize("raw", ["2024-01-05T25:00:00", "next tuesday", "1704450600"])
def test_datetime_refuses(raw: str) -> None:
    assert refused(raw, type="datetime") == f"expected an ISO 8601 date-time, got {raw!r}"


# constraints ---------------------------------------------------------------------------------------------
def test_regex_is_a_full_match() -> None:
    spec = field(regex=r"ORG-\d{5}")
    assert check_constraints("ORG-00001", spec) is None
    assert check_constraints("ORG-000012", spec) == "'ORG-000012' does not match the pattern ORG-\\d{5}"
    assert check_constraints("xORG-00001", spec) is not None
    # Alternation must match the whole value too, not only its first branch.
    assert check_constraints("ab", field(regex="a|ab")) is None


def test_regex_message_clips_long_values() -> None:
    (reason) = check_constraints("x" * 100, field(regex=r"\d+"))
    assert reason == f"'{'x' * 59}…' does not match the pattern \\d+"


@pytest.mark.parametrize(
    ("value", "reason"),
    [(1, None), (10, None), (0, "0 is below min 1"), (11, "11 is above max 10"), (-5, "-5 is below min 1")],
)
def test_min_max_integer(value: int, reason: str | None) -> None:
    assert check_constraints(value, field(type="integer", min=1, max=10)) == reason


def test_min_max_float() -> None:
    spec = field(type="float", min=0.5, max=2.5)
    assert check_constraints(0.5, spec) is None
    assert check_constraints(0.49, spec) == "0.49 is below min 0.5"
    assert check_constraints(2.51, spec) == "2.51 is above max 2.5"


def test_min_max_length_counts_characters() -> None:
    spec = field(min_length=2, max_length=4)
    assert check_constraints("ab", spec) is None
    assert check_constraints("日本語も", spec) is None  # 4 characters, 12 bytes
    assert check_constraints("a", spec) == "length 1 is below min_length 2"
    assert check_constraints("abcde", spec) == "length 5 is above max_length 4"


def test_enum() -> None:
    assert check_constraints("red", field(enum=["red", "green"])) is None
    assert check_constraints("Red", field(enum=["red", "green"])) == "'Red' is not one of ['red', 'green']"
    assert check_constraints(2, field(type="integer", enum=[1, 2])) is None
    assert check_constraints(3, field(type="integer", enum=[1, 2])) == "3 is not one of [1, 2]"


def test_enum_declared_as_numbers_matches_text_of_a_string_field() -> None:
    spec = field(enum=[1, 2])  # YAML `enum: [1, 2]` on a string field
    assert check_constraints(coerce("1", spec), spec) is None


# whole records ----------------------------------------------------------------------------------------------
SCHEMA = SchemaSpec.model_validate(
    {
        "key": "org_id",
        "fields": {
            "org_id": {"type": "string", "required": True, "regex": r"ORG-\d{5}"},
            "name": {"type": "string", "required": True, "min_length": 2},
            "employees": {"type": "integer", "min": 1},
            "active": {"type": "boolean"},
            "founded": {"type": "date"},
            "seen_at": {"type": "datetime"},
            "score": {"type": "float", "max": 1},
        },
    }
)

GOOD_RAW = {
    "org_id": "ORG-00001", "name": "Acme", "employees": "12", "active": "yes",
    "founded": "1999-12-31", "seen_at": "2024-01-05T10:30:00", "score": "0.5",
}


def test_validate_record_types_every_field() -> None:
    values, errors = validate_record(GOOD_RAW, SCHEMA)
    assert errors == []
    assert values == {
        "org_id": "ORG-00001", "name": "Acme", "employees": 12, "active": True,
        "founded": dt.date(1999, 12, 31), "seen_at": dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC), "score": 0.5,
    }


def test_optional_fields_may_be_absent_or_blank_and_skip_constraints() -> None:
    values, errors = validate_record({"org_id": "ORG-00001", "name": "Acme", "employees": " "}, SCHEMA)
    assert errors == []
    assert values["employees"] is None and values["score"] is None


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_required_field_missing_or_blank(blank: Any) -> None:
    raw = {**GOOD_RAW, "name": blank}
    assert validate_record(raw, SCHEMA)[1] == [{"field": "name", "reason": "required field is missing or blank"}]
    raw.pop("name")
    assert validate_record(raw, SCHEMA)[1] == [{"field": "name", "reason": "required field is missing or blank"}]


def test_every_error_of_a_record_is_reported_in_field_order() -> None:
    raw = {**GOOD_RAW, "org_id": "ORG-1", "name": "", "employees": "1,200", "active": "maybe", "score": "2"}
    values, errors = validate_record(raw, SCHEMA)
    assert errors == [
        {"field": "org_id", "reason": "'ORG-1' does not match the pattern ORG-\\d{5}"},
        {"field": "name", "reason": "required field is missing or blank"},
        {"field": "employees", "reason": "expected an integer, got '1,200'"},
        {"field": "active", "reason": "expected a boolean (true/false/yes/no/1/0), got 'maybe'"},
        {"field": "score", "reason": "2.0 is above max 1"},
    ]
    assert values["employees"] is None and values["active"] is None  # not coercible: null


def test_missing_required_columns() -> None:
    assert missing_required_columns(["name", "other"], SCHEMA) == ["org_id"]
    assert missing_required_columns(["org_id", "name"], SCHEMA) == []


# record ids ---------------------------------------------------------------------------------------------------
def test_record_uuid_follows_the_key_only() -> None:
    values = validate_record(GOOD_RAW, SCHEMA)[0]
    same_key = validate_record({**GOOD_RAW, "name": "Acme Renamed", "employees": "99"}, SCHEMA)[0]
    other_key = validate_record({**GOOD_RAW, "org_id": "ORG-00002"}, SCHEMA)[0]
    assert record_uuid(values, SCHEMA) == record_uuid(same_key, SCHEMA)
    assert record_uuid(values, SCHEMA) != record_uuid(other_key, SCHEMA)


def test_record_uuid_is_a_uuid5_of_the_canonical_key() -> None:
    # Pinned: ids of existing datasets must not change between versions.
    expected = uuid.uuid5(RECORD_NAMESPACE, '[["org_id", "ORG-00001"]]')
    value = record_uuid({"org_id": "ORG-00001", "name": "x"}, SCHEMA)
    assert value == str(expected)
    assert uuid.UUID(value).version == 5


def test_composite_key_order_and_values_matter() -> None:
    schema = SchemaSpec.model_validate({"key": ["a", "b"], "fields": {"a": {}, "b": {}}})
    ab = record_uuid({"a": "x", "b": "y"}, schema)
    assert ab == record_uuid({"b": "y", "a": "x"}, schema)  # dict order does not matter
    assert ab != record_uuid({"a": "y", "b": "x"}, schema)
    assert ab != record_uuid({"a": "xy", "b": ""}, schema)  # no ambiguity from concatenation
    assert record_uuid({"a": "x", "b": None}, schema) != record_uuid({"a": "x", "b": ""}, schema)


def test_no_key_gives_a_content_derived_stable_id() -> None:
    schema = SchemaSpec.model_validate({"fields": {"a": {}, "n": {"type": "integer"}, "d": {"type": "date"}}})
    record = {"a": "x", "n": 1, "d": dt.date(2024, 1, 5)}
    first = record_uuid(record, schema)
    assert first == record_uuid(dict(record), schema)
    assert first == str(uuid.uuid5(RECORD_NAMESPACE, '[["a", "x"], ["n", 1], ["d", "2024-01-05"]]'))
    for change in ({"a": "y"}, {"n": 2}, {"d": dt.date(2024, 1, 6)}, {"a": None}):
        assert record_uuid({**record, **change}, schema) != first


def test_key_of_typed_values_is_the_same_for_equivalent_text() -> None:
    schema = SchemaSpec.model_validate({"key": "n", "fields": {"n": {"type": "integer"}}})
    ids = {record_uuid(validate_record({"n": text}, schema)[0], schema) for text in ["7", " 7", "7.0", "+7"]}
    assert len(ids) == 1


# whole batches ----------------------------------------------------------------------------------------------------
def raw_table(rows: list[dict[str, Any]], parse_errors: list[str | None] | None = None) -> pa.Table:
    names = list(SCHEMA.fields)
    n = len(rows)
    columns: dict[str, pa.Array] = {name: pa.array([r.get(name) for r in rows], pa.string()) for name in names}
    columns["_source"] = pa.array(["orgs.csv"] * n, pa.string())
    columns["_source_row"] = pa.array(range(1, n + 1), pa.int64())
    columns["_source_order"] = pa.array([f"orgs.csv\x1f{i:015d}" for i in range(1, n + 1)], pa.string())
    columns["_parse_error"] = pa.array(parse_errors or [None] * n, pa.string())
    return pa.table(columns)


def test_validate_table_keeps_every_row() -> None:
    rows = [
        GOOD_RAW,
        {**GOOD_RAW, "org_id": "ORG-00002", "employees": "zero"},
        {**GOOD_RAW, "org_id": "ORG-00003", "seen_at": "2024-01-05T12:30:00+02:00"},
        {},
        {**GOOD_RAW, "org_id": "ORG-00005"},
    ]
    out = validate_table(raw_table(rows, [None, None, None, "malformed CSV row: 3 cells, header has 7", None]), SCHEMA)
    assert out.column_names == [
        "record_uuid", *SCHEMA.fields, "_errors", "_raw", "_source", "_source_row", "_source_order"
    ]
    assert out.schema.field("employees").type == pa.int64()
    assert out.schema.field("active").type == pa.bool_()
    assert out.schema.field("founded").type == pa.date32()
    assert out.schema.field("seen_at").type == pa.timestamp("us", tz="UTC")
    assert out.schema.field("score").type == pa.float64()

    assert out.num_rows == 5
    errors = out["_errors"].to_pylist()
    valid = [i for i, e in enumerate(errors) if e is None]
    invalid = [i for i, e in enumerate(errors) if e is not None]
    assert (valid, invalid) == ([0, 2, 4], [1, 3])
    assert out["_source_row"].to_pylist() == [1, 2, 3, 4, 5]

    rows_out = out.to_pylist()
    assert rows_out[0]["employees"] == 12 and rows_out[0]["active"] is True
    assert rows_out[0]["record_uuid"] == record_uuid(validate_record(GOOD_RAW, SCHEMA)[0], SCHEMA)
    assert rows_out[2]["seen_at"] == dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)
    for i in valid:
        assert rows_out[i]["_raw"] is None
        uuid.UUID(rows_out[i]["record_uuid"])


def test_invalid_rows_carry_errors_and_raw_values_but_no_typed_values() -> None:
    bad = {**GOOD_RAW, "org_id": "ORG-00002", "employees": "zero", "score": "9"}
    row = validate_table(raw_table([bad]), SCHEMA).to_pylist()[0]
    assert json.loads(row["_errors"]) == [
        {"field": "employees", "reason": "expected an integer, got 'zero'"},
        {"field": "score", "reason": "9.0 is above max 1"},
    ]
    assert json.loads(row["_raw"]) == bad  # exactly as read, so a user can fix and resubmit
    assert row["record_uuid"] is None
    assert all(row[name] is None for name in SCHEMA.fields)


def test_parse_error_rows_are_invalid_with_field_record() -> None:
    reason = "invalid JSON: Expecting value at column 1"
    row = validate_table(raw_table([{}], [reason]), SCHEMA).to_pylist()[0]
    assert json.loads(row["_errors"]) == [{"field": "(record)", "reason": reason}]
    assert row["record_uuid"] is None
    assert row["_source_row"] == 1


def test_parse_error_wins_even_when_the_values_would_be_valid() -> None:
    row = validate_table(raw_table([GOOD_RAW], ["malformed CSV near line 2"]), SCHEMA).to_pylist()[0]
    assert json.loads(row["_errors"]) == [{"field": "(record)", "reason": "malformed CSV near line 2"}]


def test_validate_table_of_native_values_from_parquet() -> None:
    schema = SchemaSpec.model_validate(
        {"fields": {"n": {"type": "integer"}, "when": {"type": "datetime"}, "label": {"type": "string"}}}
    )
    table = pa.table({
        "n": pa.array([1, None, 3], pa.int64()),
        "when": pa.array([dt.datetime(2024, 1, 5, 10, 30)] * 3, pa.timestamp("us")),
        "label": pa.array([1.5, 2.0, None], pa.float64()),
    })
    out = validate_table(table, schema)
    assert out["_errors"].null_count == 3
    assert out["n"].to_pylist() == [1, None, 3]
    assert out["when"].to_pylist() == [dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC)] * 3
    assert out["label"].to_pylist() == ["1.5", "2.0", None]
    assert out.column_names == ["record_uuid", "n", "when", "label", "_errors", "_raw"]


def test_validate_table_of_no_rows() -> None:
    out = validate_table(raw_table([]), SCHEMA)
    assert out.num_rows == 0
    assert out.schema.field("employees").type == pa.int64()
    assert "_errors" in out.column_names


def test_unicode_survives_into_errors_and_raw() -> None:
    bad = {**GOOD_RAW, "name": "Ü"}  # one character, below min_length 2
    row = validate_table(raw_table([bad]), SCHEMA).to_pylist()[0]
    assert '"Ü"' in row["_raw"]  # not \u00dc: readable in the quarantine file
    assert json.loads(row["_errors"]) == [{"field": "name", "reason": "length 1 is below min_length 2"}]


# values that Arrow cannot hold are bad records, not a crash of the batch -----------------------------------------
@pytest.mark.parametrize("raw", ["9223372036854775808", "-9223372036854775809", 2**63, 1e300, "99999999999999999999.0",
                                 "7" * 5000, "-" + "7" * 5000 + ".0"])
def test_integer_outside_64_bits_is_refused(raw: Any) -> None:
    assert refused(raw, type="integer").endswith("is outside the 64-bit range")


@pytest.mark.parametrize("raw", ["9223372036854775807", "-9223372036854775808", "0000000000000000000000042"])
def test_integer_at_the_64_bit_limits_is_accepted(raw: str) -> None:
    assert coerced(raw, type="integer") == int(raw)


def test_a_number_of_thousands_of_digits_is_a_bad_record_not_a_crash() -> None:
    assert refused("9" * 5000, type="float") == f"expected a finite number, got '{'9' * 5000}'"


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
def test_datetime_that_leaves_the_range_in_utc_is_refused(raw: str) -> None:
    assert refused(raw, type="datetime") == f"date-time {raw!r} is out of range in UTC"


def test_a_huge_integer_quarantines_its_record_and_the_batch_goes_on() -> None:
    rows = [{**GOOD_RAW, "employees": "99999999999999999999"}, {**GOOD_RAW, "org_id": "ORG-00002"}]
    out = validate_table(raw_table(rows), SCHEMA)
    errors = out["_errors"].to_pylist()
    assert errors[1] is None
    assert json.loads(errors[0])[0]["field"] == "employees"


def test_a_record_without_any_key_value_is_invalid_not_a_duplicate() -> None:
    schema = SchemaSpec.model_validate(
        {"key": ["org_id", "country"], "fields": {"org_id": {}, "country": {}, "name": {}}}
    )
    values, errors = validate_record({"org_id": " ", "country": None, "name": "Acme"}, schema)
    assert errors == [{"field": "org_id,country", "reason": "the record has no key: every key field is blank"}]
    # One key part is enough to identify the record.
    assert validate_record({"org_id": "ORG-1", "country": "", "name": "Acme"}, schema)[1] == []
