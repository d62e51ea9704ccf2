"""The columnar `validate_table` against the per-record loop it replaced, on many generated tables.

`reference_validate_table` is that loop, kept here (not in product code) as the definition of the
right answer: every output must be equal to it, table for table, for any input.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.engine import kernels, validation
from pipelines.engine.validation import RECORD_NAMESPACE, record_uuid, validate_record, validate_table
from pipelines.io.columns import ERRORS_COLUMN, RAW_COLUMN, SOURCE_COLUMNS
from pipelines.spec.workflow import SchemaSpec


def reference_validate_table(table: pa.Table, schema: SchemaSpec) -> pa.Table:
    """The row-by-row validate_table as it was before the columnar path (verbatim)."""
    raw_columns = {name: table.column(name).to_pylist() for name in table.column_names}
    rows = table.num_rows
    parse_errors = raw_columns.get("_parse_error") or [None] * rows
    given_ids = raw_columns.get("record_uuid") or [None] * rows
    typed: dict[str, list[Any]] = {name: [] for name in schema.fields}
    ids: list[str | None] = []
    errors_out: list[str | None] = []
    raw_out: list[str | None] = []
    for i in range(rows):
        raw = {name: raw_columns[name][i] for name in schema.fields if name in raw_columns}
        if parse_errors[i]:
            values, errors = {n: None for n in schema.fields}, [{"field": "(record)", "reason": parse_errors[i]}]
        else:
            values, errors = validate_record(raw, schema)
        for name in schema.fields:
            typed[name].append(None if errors else values[name])
        ids.append(None if errors else given_ids[i] or record_uuid(values, schema))
        errors_out.append(json.dumps(errors, ensure_ascii=False) if errors else None)
        raw_out.append(json.dumps(raw, ensure_ascii=False, default=str) if errors else None)
    arrays: dict[str, pa.Array] = {"record_uuid": pa.array(ids, pa.string())}
    for name, field in schema.fields.items():
        arrays[name] = pa.array(typed[name], type=field.type.arrow)
    arrays[ERRORS_COLUMN] = pa.array(errors_out, pa.string())
    arrays[RAW_COLUMN] = pa.array(raw_out, pa.string())
    for name in SOURCE_COLUMNS:
        if name in raw_columns and name != "_parse_error":
            arrays[name] = table.column(name).combine_chunks()
    return pa.table(arrays)


def assert_same(table: pa.Table, schema: SchemaSpec) -> None:
    expected = reference_validate_table(table, schema)
    got = validate_table(table, schema)
    assert got.schema == expected.schema
    if not got.equals(expected):
        for name in expected.column_names:
            e, g = expected[name].to_pylist(), got[name].to_pylist()
            for i, (a, b) in enumerate(zip(e, g)):
                assert a == b, (name, i, a, b, table.slice(i, 1).to_pylist())
        pytest.fail("tables differ")
    # -0.0 and 0.0 are equal to Arrow and ==, not to repr (nor to a record_uuid)
    assert repr(got.to_pylist()) == repr(expected.to_pylist())


# values -------------------------------------------------------------------------------------------------
SPACES = ["", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", "\x85", "\u200b", "\r\n"]
BLANKS = [None, "", "   ", "\t\r\n", "\u00a0", "\u2003", "\x1f", " \u00a0 "]
WORDS = ["Acme", "Müller GmbH", "株式会社", "Société Générale", "a", "ab", "x" * 30, 'say "hi"', "back\\slash",
         "line\nbreak", "tab\there", "ctrl\x01char", "🚀 rocket", "ORG-00001", "ORG-١٢٣٤٥", "ORG-0000", "org-00001",
         "a@b.co", "a@b", "ä@ö.de", "x y@z.com", "red", "Red", "green", "1", "2", "1.0", "abc", "foo bar", "_x_",
         "İstanbul", "ﬀ", "K", "ab\u00a0", "\u00a0ab", "é", "ÿÿ", "abab", "aaa", "a\nb", "x\x0by", "x\x1cy"]
INTEGERS = ["12", "+7", "-3", "12.0", "12.", "0012", "-0", "9223372036854775807", "-9223372036854775808",
            "9223372036854775808", "999999999999999999", "9999999999999999999", "0000000000000000000000042",
            "99999999999999999999.0", "1,200", "1 200", "12.5", "1e3", "twelve", "0x1F", "--1", "٣", "１２",
            "+", ".0", "5.000", "7" * 30, "-" + "7" * 25 + ".0", "2", "3", "1", "0", "10", "11", "100"]
FLOATS = ["1.5", "-2.25", "1e3", "3", ".5", "1.", "nan", "inf", "-Infinity", "1e999", "-0", "-0.0", "0", "1_000",
          "0x10", "1e-400", "4.9e-324", "1,5", "abc", "+.5e-3", "٣.٥", "2.5", "0.49", "0.5", "2.51", "1E+05",
          "123456789012345678901234567890", "0.1", "1.0000000000000002", "9" * 400]
BOOLEANS = ["true", "TRUE", "t", "Yes", "y", "1", "false", "F", "no", "N", "0", "maybe", "on", "2", "İ", "ｔｒｕｅ",
            "True ", "yes\u00a0"]
DATES = ["2024-02-29", "2023-02-29", "0000-01-01", "0001-01-01", "9999-12-31", "20240105", "2024-W01-1",
         "2024-1-5", "2024-01-05T10:00:00", "2024-13-01", "2024-00-10", "2024-04-31", "1900-02-29", "2000-02-29",
         "２０２４-01-05", "yesterday", "2024-01-32"]
TIMES = ["T10:30", " 10:30", "T10:30:00", "T23:59:59.999999", "T10:30:00.1", "T10:30:00.12345",
         "T10:30:00.1234567", "T24:00", "T23:59:60", "T10", "T10:30:00,5", "x10:30", "T10:30Z", "T10:30:00+02:00",
         "T10:30:00-05:30", "T10:30+0200", "T10:30+02", "T10:30:00+23:59", "T10:30:00+24:00", "T10:30:00+02:60",
         "T10:30:00-00:00", "T00:00:00+01:00", "T23:00:00-05:00", "T10:30:00.5Z", "T١٠:30"]


def random_date(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}",
        rng.choice(DATES),
        (dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(-700000, 2900000))).isoformat(),
    ])


def clean_value(rng: random.Random, kind: str) -> str:
    """A value most fields accept (constraints may still refuse it)."""
    if kind == "string":
        return rng.choice(["Acme", "Müller GmbH", "株式会社", "ab", "red", "ORG-00042", "a@b.co", "green", "abc",
                           f"ORG-{rng.randint(0, 99999):05d}", "x y", 'q"uote', "é"])
    if kind == "integer":
        return rng.choice(["1", "2", "+7", "3.0", "12", "0", "-3", str(rng.randint(-(10**18), 10**18))])
    if kind == "float":
        return rng.choice(["1.5", "2", "0.5", "-0.0", "1e1", repr(rng.uniform(-5, 5))])
    if kind == "boolean":
        return rng.choice(["true", "no", "Y", "0", "1", "FALSE"])
    date = (dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(-700000, 2900000))).isoformat()
    if kind == "date":
        return date
    return date + rng.choice(["", "T10:30", " 10:30:00", "T23:59:59.5", "T10:30:00Z", "T10:30:00+02:00",
                              "T01:02:03.123456-11:30"])


def raw_value(rng: random.Random, kind: str, messy: float = 1.0) -> Any:
    if rng.random() > messy:
        return clean_value(rng, kind)
    roll = rng.random()
    if roll < 0.12:
        return rng.choice(BLANKS)
    if kind == "string":
        value = rng.choice(WORDS) if rng.random() < 0.8 else "".join(
            rng.choice("aé b1_@.-\u00a0\"\\\n日") for _ in range(rng.randint(1, 8)))
    elif kind == "integer":
        value = rng.choice(INTEGERS) if rng.random() < 0.6 else str(rng.randint(-(10**rng.randint(1, 20)), 10**12))
    elif kind == "float":
        value = rng.choice(FLOATS) if rng.random() < 0.6 else repr(rng.uniform(-3, 3) * 10 ** rng.randint(-30, 30))
    elif kind == "boolean":
        value = rng.choice(BOOLEANS)
    elif kind == "date":
        value = random_date(rng)
    else:
        value = random_date(rng) + (rng.choice(TIMES) if rng.random() < 0.85 else "")
    if rng.random() < 0.2:  # surrounding whitespace, ASCII or not
        value = rng.choice(SPACES) + value + rng.choice(SPACES)
    return value


def native_column(rng: random.Random, kind: str, rows: int) -> pa.Array:
    """A column of native values, as Parquet or a SQL source gives them."""
    def maybe(make: Any) -> list[Any]:
        return [None if rng.random() < 0.15 else make() for _ in range(rows)]

    choice = rng.random()
    if kind == "integer" and choice < 0.5:
        return pa.array(maybe(lambda: rng.choice([0, 1, 3, -5, 10, 2**62, -(2**63), 2**63 - 1])), pa.int64())
    if kind == "integer" and choice < 0.7:
        return pa.array(maybe(lambda: rng.choice([1, 2, 200])), pa.int32())
    if kind in ("integer", "float") and choice < 0.9:
        return pa.array(maybe(lambda: rng.choice([1.0, 1.5, -0.0, 0.0, 2.5, float("nan"), float("inf"), 1e300])),
                        pa.float64())
    if kind == "float" or (kind == "integer" and choice < 0.95):
        return pa.array(maybe(lambda: rng.choice([1.5, 2.0, float("nan")])), pa.float32())
    if kind == "boolean":
        if choice < 0.7:
            return pa.array(maybe(lambda: rng.random() < 0.5), pa.bool_())
        return pa.array(maybe(lambda: rng.choice([0, 1, 2])), pa.int64())
    if kind == "date":
        days = maybe(lambda: dt.date(1, 1, 1) + dt.timedelta(days=rng.randint(0, 3_000_000)))
        if choice < 0.7:
            return pa.array(days, pa.date32())
        return pa.array([None if d is None else dt.datetime(d.year, d.month, d.day, 5) for d in days],
                        pa.timestamp("us"))
    if kind == "datetime":
        times = maybe(lambda: dt.datetime(1, 1, 1, 1) + dt.timedelta(seconds=rng.randint(0, 315_000_000_000),
                                                                      microseconds=rng.randint(0, 999_999)))
        unit_tz = rng.choice([("us", None), ("us", "UTC"), ("ms", None), ("us", "Europe/Paris"), ("us", "+00:00")])
        if unit_tz[1] not in (None, "UTC"):
            times = [t if t is None or 2 <= t.year <= 9998 else None for t in times]
        return pa.array(times, pa.timestamp(unit_tz[0], tz="UTC" if unit_tz[1] else None)).cast(
            pa.timestamp(*unit_tz))
    # a string field given numbers, booleans or dates
    return rng.choice([
        pa.array(maybe(lambda: rng.randint(-5, 500)), pa.int64()),
        pa.array(maybe(lambda: rng.choice([1.5, 2.0, 1e16, float("nan")])), pa.float64()),
        pa.array(maybe(lambda: rng.random() < 0.5), pa.bool_()),
        pa.array(maybe(lambda: dt.date(2024, 1, rng.randint(1, 31))), pa.date32()),
    ])


# schemas ---------------------------------------------------------------------------------------------------
REGEXES = [r"ORG-\d{5}", r"[^@\s]+@[^@\s]+\.[^@\s]+", r"(?=a)\w+", r"\w+", r"a|ab", r"(?i)abc", r"\d+$", r"\w+\b.*",
           r".{2,5}", r"x*?y?", r"(\w)\1", r"[^\W\d]+", r"\S+ \S+", r"\bfoo\b.*", r"(?a)\w+", r"(?s)a.b", r"é+",
           r"[à-ÿ]+", r"a{,3}b*", r"(?P<x>a)(?P=x)", r"a++", r"(?>a)b?", r"^\w+$", r"\A\w+\Z", r"x\sy", r"x\Sy",
           r"[\s\S]*", r"\D+", r"[0-9a-f]{2,}|red|green", r"(?x) a b # comment", r"(?:ab)+", r"ORG-[0-9]{5}",
           r"[^a]", r"\w+\B", r"(?m)a$", r"ab(?i:c)", r"\d{1001}|x"]


def random_field(rng: random.Random, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "required": rng.random() < 0.3}
    if kind == "string":
        if rng.random() < 0.4:
            spec["regex"] = rng.choice(REGEXES)
        if rng.random() < 0.3:
            spec["min_length"] = rng.randint(0, 3)
        if rng.random() < 0.3:
            spec["max_length"] = rng.randint(3, 12)
        if rng.random() < 0.15:
            spec["enum"] = rng.choice([["red", "green", "Acme"], [1, 2], ["ab", "abc", "é"]])
    if kind in ("integer", "float"):
        if rng.random() < 0.4:
            spec["min"] = rng.choice([1, 0.5, -2.5, -1e30, 2.5, 0, 1e30])
        if rng.random() < 0.4:
            spec["max"] = rng.choice([10, 1, 2.5, 1e30, 2**62 + 0.0, 9.2e18, 100.5])
        if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
            spec["min"], spec["max"] = spec["max"], spec["min"]
        if rng.random() < 0.15:
            spec["enum"] = rng.choice([[1, 2, 3], [0.0, 1.5, 2], [2**62 + 1, 12], [-0.0, 7.0]])
    return spec


def random_schema(rng: random.Random) -> SchemaSpec:
    kinds = ["string", "string", "integer", "float", "boolean", "date", "datetime"]
    fields = {f"f{i}": random_field(rng, rng.choice(kinds)) for i in range(rng.randint(1, 6))}
    names = list(fields)
    key = rng.sample(names, rng.randint(1, min(2, len(names)))) if rng.random() < 0.7 else []
    return SchemaSpec.model_validate({"fields": fields, "key": key})


def random_table(rng: random.Random, schema: SchemaSpec, rows: int) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    messy = rng.choice([0.01, 0.1, 0.5, 1.0])
    for name, field in schema.fields.items():
        roll = rng.random()
        if roll < 0.05:
            continue  # the column is not in the file
        if roll < 0.2:
            columns[name] = native_column(rng, field.type.value, rows)
        elif roll < 0.23:
            columns[name] = pa.nulls(rows, pa.string() if rng.random() < 0.5 else pa.null())
        else:
            values = [raw_value(rng, field.type.value, messy) for _ in range(rows)]
            columns[name] = pa.array(values, pa.large_string() if rng.random() < 0.1 else pa.string())
    if rng.random() < 0.3:
        columns["record_uuid"] = pa.array(
            [rng.choice([None, "", str(uuid.UUID(int=rng.getrandbits(128)))]) for _ in range(rows)], pa.string())
    if rng.random() < 0.8:
        columns["_source"] = pa.array(["in.csv"] * rows, pa.string())
        columns["_source_row"] = pa.array(range(1, rows + 1), pa.int64())
        columns["_source_order"] = pa.array([f"in.csv\x1f{i:015d}" for i in range(1, rows + 1)], pa.string())
        errors = [None] * rows
        for i in range(rows):
            if rng.random() < 0.05:
                errors[i] = rng.choice(["malformed CSV row: 3 cells, header has 7", "", "invalid JSON: é"])
        columns["_parse_error"] = pa.array(errors, pa.string())
    table = pa.table(columns) if columns else pa.table({"other": pa.nulls(rows)})
    if rows > 2 and rng.random() < 0.3:  # several chunks, as concatenated batches give
        table = pa.concat_tables([table.slice(0, rows // 2), table.slice(rows // 2)])
    return table


@pytest.mark.parametrize("small_batch_rows", [validation.SMALL_BATCH_ROWS, 0])
@pytest.mark.parametrize("seed", range(40))
def test_columnar_validation_equals_the_per_record_loop(
        seed: int, small_batch_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches go the per-record way; with that cut-off at 0 every size takes the kernels."""
    monkeypatch.setattr(validation, "SMALL_BATCH_ROWS", small_batch_rows)
    rng = random.Random(seed)
    for _ in range(12):
        schema = random_schema(rng)
        assert_same(random_table(rng, schema, rng.choice([0, 1, 5, 40, 120])), schema)


def test_the_sample_workflow_schema_on_messy_records() -> None:
    schema = SchemaSpec.model_validate({
        "key": "org_id",
        "fields": {
            "org_id": {"type": "string", "required": True, "regex": r"ORG-\d{5}"},
            "name": {"type": "string", "required": True, "min_length": 2, "max_length": 200},
            "email": {"type": "string", "regex": r"[^@\s]+@[^@\s]+\.[^@\s]+"},
            "employees": {"type": "integer", "min": 1, "max": 5000000},
            "description": {"type": "string", "max_length": 2000},
        },
    })
    rng = random.Random(3)
    for _ in range(20):
        rows = 200
        table = pa.table({
            "org_id": [rng.choice(["ORG-00001", "ORG-00002", f"ORG-{rng.randint(0, 99999):05d}", "ORG-١٢٣٤٥",
                                   "ORG-1", " ORG-00003\u00a0", "", None]) for _ in range(rows)],
            "name": [rng.choice(WORDS + ["", "x", "é" * 201]) for _ in range(rows)],
            "email": [rng.choice(["a@b.co", "ä@ö.de", "bad", " a@b.co ", "a b@c.d", None]) for _ in range(rows)],
            "employees": [rng.choice(INTEGERS + ["5000001", "5000000", "1"]) for _ in range(rows)],
            "description": [rng.choice(WORDS) for _ in range(rows)],
            "_parse_error": pa.nulls(rows, pa.string()),
        })
        assert_same(table, schema)


def test_given_record_uuid_of_an_odd_type_is_left_to_the_per_record_loop() -> None:
    schema = SchemaSpec.model_validate({"fields": {"a": {}}})
    table = pa.table({"a": ["x", "y", ""], "record_uuid": pa.array([None, None, None], pa.null())})
    assert_same(table, schema)
    odd = pa.table({"a": ["x"], "record_uuid": pa.array([5], pa.int64())})
    with pytest.raises(pa.ArrowException):
        reference_validate_table(odd, schema)
    with pytest.raises(pa.ArrowException):
        validate_table(odd, schema)


# the building blocks -------------------------------------------------------------------------------------------
def test_whitespace_is_what_str_strip_removes() -> None:
    spaces = set(kernels.python_whitespace().to_pylist())
    assert spaces == {c for c in map(chr, range(0x110000)) if c.isspace()}
    values = ["".join(random.Random(i).choice(["a", "é", " ", "\u00a0", "\x1c", "\u2003", "日"]) for _ in range(6))
              for i in range(3000)]
    stripped, trusted, _ascii = kernels.strip(pa.array(values, pa.string()))
    for value, out, ok in zip(values, stripped.to_pylist(), trusted):
        if ok:
            assert out == value.strip()
    assert trusted.sum() > 1000


ASCII_SAMPLES = ["", "a", "ab", "abc", "aab", "ORG-00001", "ORG-0001", "a@b.c", "a b", "x y", "x\ty", "x\x0by",
                 "x\x1cy", "foo bar", "foo", "foob", "a\nb", "axb", "ABC", "aa", "b", "x", "y", "xy", "xxy", "red",
                 "12", "1a", "_", "a_1", "ff", "0a", "a\n", "\n", "ab\nab", "a$", "é"]


@pytest.mark.parametrize("pattern", REGEXES)
def test_translated_patterns_match_what_python_matches_on_ascii(pattern: str) -> None:
    translated = kernels.re2_fullmatch(pattern)
    rng = random.Random(pattern)
    samples = ASCII_SAMPLES + ["".join(rng.choice("abxy 1_@.-\t\x1c\x0bORG0") for _ in range(rng.randint(1, 9)))
                               for _ in range(3000)]
    samples = [s for s in samples if s.isascii() and s == s.strip()]  # the values the kernel is asked about
    if translated is None:
        return  # left to Python
    got = pc.match_substring_regex(pa.array(samples, pa.string()), translated).to_pylist()
    for sample, matched in zip(samples, got):
        assert matched == bool(re.fullmatch(pattern, sample)), (pattern, translated, sample)


def test_patterns_outside_the_shared_subset_are_not_translated() -> None:
    for pattern in [r"(?=a)\w+", r"(?i)abc", r"(\w)\1", r"(?P<x>a)(?P=x)", r"a++", r"(?>a)b?", r"(?m)a$",
                    r"ab(?i:c)", r"\d{1001}|x"]:
        assert kernels.re2_fullmatch(pattern) is None, pattern
    assert kernels.re2_fullmatch(r"ORG-\d{5}") is not None
    assert kernels.re2_fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+") is not None


def test_uuid5_strings() -> None:
    names = ['[["org_id", "ORG-00001"]]', "", "日本", '[["a", null]]']
    got = kernels.uuid5_strings(RECORD_NAMESPACE.bytes, [n.encode() for n in names]).to_pylist()
    assert got == [str(uuid.uuid5(RECORD_NAMESPACE, n)) for n in names]


def test_date_arithmetic_agrees_with_python() -> None:
    rng = np.random.default_rng(0)
    year, month, day = rng.integers(0, 10001, 20000), rng.integers(0, 14, 20000), rng.integers(0, 33, 20000)
    ok = kernels.valid_date(year, month, day)
    days = kernels.epoch_days(year, month, day)
    for y, m, d, valid, n in zip(year.tolist(), month.tolist(), day.tolist(), ok.tolist(), days.tolist()):
        try:
            expected = (dt.date(y, m, d) - dt.date(1970, 1, 1)).days
        except ValueError:
            assert not valid
        else:
            assert valid and n == expected


def test_every_shape_of_date_time_text() -> None:
    dates = ["2024-01-05", "2024-02-29", "2023-02-29", "0001-01-01", "9999-12-31", "0000-12-31", "1969-12-31"]
    times = ["", "10:30", "00:00", "23:59", "24:00", "10:30:00", "23:59:59", "10:30:60", "10:30:00.1", "10:30:00.12",
             "10:30:00.123", "10:30:00.1234", "10:30:00.12345", "10:30:00.123456", "10:30:00.1234567", "10:30:00."]
    offsets = ["", "Z", "+00:00", "-00:00", "+02:00", "-05:30", "+23:59", "-23:59", "+24:00", "+02:60", "+0200", "+02"]
    values = list(dates)
    for d in dates:
        for sep in ("T", " ", "t", "x"):
            values += [f"{d}{sep}{t}{o}" for t in times if t for o in offsets]
    for kind in ("datetime", "date"):
        schema = SchemaSpec.model_validate({"fields": {"when": {"type": kind}}})
        table = pa.table({"when": pa.array(values, pa.string())})
        assert_same(table, schema)
        assert validate_table(table, schema)["when"].null_count < len(values)  # some were valid
