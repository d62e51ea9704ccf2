"""Per-record validation: coerce raw values to the declared types and check constraints.

Shared by the batch path (inside Ray Data `map_batches`) and the online API, so both accept
and reject exactly the same records. A validated batch keeps every input row: valid rows get
typed values and a `record_uuid`; invalid rows carry `_errors` (JSON) and their raw values.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.engine import kernels
from pipelines.io.columns import ERRORS_COLUMN, RAW_COLUMN, SOURCE_COLUMNS
from pipelines.spec.errors import clip
from pipelines.spec.workflow import FieldSpec, FieldType, SchemaSpec

RECORD_NAMESPACE = uuid.UUID("6f1c3a52-8f0e-4d8a-9a57-2b1f0f6c9e11")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class CoercionError(ValueError):
    pass


def coerce(value: Any, field: FieldSpec) -> Any:
    """A raw value (string from text formats, or native from Parquet/SQL) as the declared type.

    Blank strings are missing values. Raises CoercionError with a reason a user can act on.
    """
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
    if value is None or (isinstance(value, float) and value != value):
        return None
    kind = field.type
    if kind is FieldType.string:
        # Native values (Parquet, SQL) as the text a JSON Lines file gives them (sources.text_value).
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        return value if isinstance(value, str) else str(value)
    if kind is FieldType.integer:
        return _integer(value)
    if kind is FieldType.float:
        if isinstance(value, bool):
            raise CoercionError(f"expected a number, got boolean {value}")
        try:
            number = float(value) if isinstance(value, (int, float)) else float(str(value))
        except (ValueError, OverflowError):
            raise CoercionError(f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise CoercionError(f"expected a finite number, got {value!r}")
        return number
    if kind is FieldType.boolean:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise CoercionError(f"expected a boolean (true/false/yes/no/1/0), got {value!r}")
    if kind is FieldType.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise CoercionError(f"expected a date as YYYY-MM-DD, got {value!r}") from None
    if kind is FieldType.datetime:
        if isinstance(value, dt.datetime):
            parsed = value
        else:
            try:
                parsed = dt.datetime.fromisoformat(str(value))
            except ValueError:
                raise CoercionError(f"expected an ISO 8601 date-time, got {value!r}") from None
        # Naive times are taken as UTC so that the same text gives the same instant everywhere.
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.timezone.utc)
        try:
            return parsed.astimezone(dt.timezone.utc)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable instant
            raise CoercionError(f"date-time {value!r} is out of range in UTC") from None
    raise CoercionError(f"unsupported type {kind}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise CoercionError(f"expected an integer, got boolean {value}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise CoercionError(f"expected an integer, got {value!r}")
        number = int(value)
    else:
        text = str(value)
        if re.fullmatch(r"[+-]?\d+(\.0*)?", text) and len(text.lstrip("+-").split(".")[0].lstrip("0")) > 19:
            # More digits than any int64 (and, past 4,300, more than Python converts at all).
            raise CoercionError(f"integer {clip(text, 60)} is outside the 64-bit range")
        if re.fullmatch(r"[+-]?\d+", text):
            number = int(text)
        elif re.fullmatch(r"[+-]?\d+\.0*", text):
            number = int(text.split(".")[0])
        else:
            raise CoercionError(f"expected an integer, got {text!r}")
    # The column is int64: a larger value is a bad record, not a crash of the whole batch.
    if not INT64_MIN <= number <= INT64_MAX:
        raise CoercionError(f"integer {clip(str(number), 60)} is outside the 64-bit range")
    return number


def check_constraints(value: Any, field: FieldSpec) -> str | None:
    """The reason a coerced, non-null value breaks a constraint, or None."""
    if field.enum is not None and value not in field.enum:
        return f"{value!r} is not one of {field.enum}"
    if isinstance(value, str):
        if field.min_length is not None and len(value) < field.min_length:
            return f"length {len(value)} is below min_length {field.min_length}"
        if field.max_length is not None and len(value) > field.max_length:
            return f"length {len(value)} is above max_length {field.max_length}"
        if field.regex is not None and not re.fullmatch(field.regex, value):
            return f"{clip(value, 60)!r} does not match the pattern {field.regex}"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if field.min is not None and value < field.min:
            return f"{value} is below min {field.min:g}"
        if field.max is not None and value > field.max:
            return f"{value} is above max {field.max:g}"
    return None


def validate_record(raw: dict[str, Any], schema: SchemaSpec) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(typed values, errors as {field, reason}) for one raw record."""
    values: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for name, field in schema.fields.items():
        try:
            value = coerce(raw.get(name), field)
        except CoercionError as exc:
            errors.append({"field": name, "reason": str(exc)})
            values[name] = None
            continue
        if value is None:
            if field.required:
                errors.append({"field": name, "reason": "required field is missing or blank"})
        else:
            reason = check_constraints(value, field)
            if reason:
                errors.append({"field": name, "reason": reason})
        values[name] = value
    if schema.key and not errors and all(values[k] is None for k in schema.key):
        # Without any key value every such record would share one record_uuid.
        errors.append({"field": ",".join(schema.key), "reason": "the record has no key: every key field is blank"})
    return values, errors


def record_uuid(values: dict[str, Any], schema: SchemaSpec) -> str:
    """Stable id: from the declared key, or from the whole record when there is none."""
    names = schema.key or list(schema.fields)
    canonical = json.dumps([[n, _canonical(values.get(n))] for n in names], ensure_ascii=False)
    return str(uuid.uuid5(RECORD_NAMESPACE, canonical))


# Up to this many rows a batch goes the per-record way: the kernels cost about 150 Arrow calls a
# batch whatever its size (1.8 ms for one record, against 0.16 ms per record in Python).
SMALL_BATCH_ROWS = 16


def validate_table(table: pa.Table, schema: SchemaSpec) -> pa.Table:
    """Validate an Arrow batch of raw records; every row comes back, valid or not.

    Output columns: record_uuid, the declared fields (typed), `_errors` (JSON list or null),
    `_raw` (JSON of the raw values, only for invalid rows) and any source columns present.

    Columnar: Arrow kernels judge whole columns where their answer provably equals `coerce` and
    `check_constraints` (engine/kernels.py); the cells they cannot judge go through `coerce` one by
    one; and every row with an error, a parse error or no key goes through `validate_record`, so
    its errors, reasons and `_raw` are exactly those of the per-record code.
    """
    rows = table.num_rows
    if rows <= SMALL_BATCH_ROWS:  # an online request's few records: the kernels' fixed cost is not worth it
        return per_record_table(table, schema)
    names = table.column_names
    given = table.column("record_uuid").combine_chunks() if "record_uuid" in names else None
    colliding = set(schema.fields) & {"record_uuid", ERRORS_COLUMN, RAW_COLUMN, *SOURCE_COLUMNS}
    if colliding or (given is not None and not (_text(given.type) or pa.types.is_null(given.type))):
        fast = np.zeros(rows, dtype=bool)  # odd batches: every row the per-record way
        return _assemble(table, schema, fast, {}, None)

    # Rows that must go the per-record way whatever their values.
    slow = np.zeros(rows, dtype=bool)
    if "_parse_error" in names:
        slow |= kernels.mask(table.column("_parse_error").is_valid())
    cells: dict[str, _Cells] = {}
    for name, field in schema.fields.items():
        column = table.column(name).combine_chunks() if name in names else None
        cells[name] = _judge_column(column, field, rows)
        if field.required:
            slow |= cells[name].missing
    # Cells the kernels left: `coerce` one by one (rows already going the slow way are skipped).
    for name, field in schema.fields.items():
        cells[name].judge_in_python(field, slow)
    if schema.key:
        slow |= np.logical_and.reduce([cells[k].missing for k in schema.key])
    return _assemble(table, schema, ~slow, cells, given)


_TRUE_VALUES = pa.array(sorted(_TRUE), pa.string())
_FALSE_VALUES = pa.array(sorted(_FALSE), pa.string())
_INTEGER_TEXT = r"^[+-]?[0-9]{1,18}(?:\.0*)?$"  # 18 digits: always inside int64
_FLOAT_TEXT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_DATE_TEXT = r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})$"
_DATETIME_TEXT = (
    r"^(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[T ](?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]{1,6}))?)?"
    r"(?P<z>Z|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))?)?$"
)


def _text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


class _Cells:
    """One field's column as judged: typed values, which are missing, which Python must judge."""

    def __init__(self, column: pa.Array | None, typed: pa.Array, ok: np.ndarray, missing: np.ndarray) -> None:
        self.column = column  # the raw column, for the cells Python judges
        self.typed, self.ok = typed, ok  # typed values, right where ok
        self.missing = missing  # typed value null: raw null or blank (ok or not, no error by itself)
        self.hard = ~ok & ~missing
        self.python_rows = np.zeros(0, dtype=np.int64)  # judged in Python and valid
        self.python_values: list[Any] = []

    def judge_in_python(self, field: FieldSpec, slow: np.ndarray) -> None:
        rows = np.flatnonzero(self.hard & ~slow)
        if not len(rows) or self.column is None:
            return
        kept_rows, kept = [], []
        for row, raw in zip(rows.tolist(), self.column.take(pa.array(rows, pa.int64())).to_pylist()):
            try:
                value = coerce(raw, field)
            except CoercionError:
                slow[row] = True
                continue
            if value is None:
                self.missing[row] = True
                if field.required:
                    slow[row] = True
                    continue
            elif check_constraints(value, field) is not None:
                slow[row] = True
                continue
            kept_rows.append(row)
            kept.append(value)
        self.python_rows, self.python_values = np.array(kept_rows, dtype=np.int64), kept

    def output(self, field: FieldSpec, fast: np.ndarray, slow_rows: np.ndarray, slow_values: list[Any]) -> pa.Array:
        """The typed column: kernel values and Python's of fast rows, the per-record path's of the others."""
        typed = kernels.with_validity(self.typed, self.ok & fast)
        still_fast = fast[self.python_rows]
        valid_slow = [i for i, v in enumerate(slow_values) if v is not None]  # rows without errors: rare
        if not still_fast.any() and not valid_slow:
            return typed  # the kernel's buffers as they are, nulls where rows went the per-record way
        column = kernels.Gather(typed, len(fast))
        values = [v for v, keep in zip(self.python_values, still_fast) if keep]
        column.put(self.python_rows[still_fast], pa.array(values, type=field.type.arrow))
        column.put(slow_rows[valid_slow], pa.array([slow_values[i] for i in valid_slow], type=field.type.arrow))
        return column.take()

    def canonical_json(self, field: FieldSpec, rows: np.ndarray) -> pa.Array:
        """`json.dumps(_canonical(value))` of the typed value of each of `rows` (all valid)."""
        typed = kernels.with_validity(self.typed, self.ok)
        kind = field.type
        if kind is FieldType.string:
            quoted, control = kernels.json_strings(typed)
            text = kernels.Gather(quoted, len(quoted))
            odd = np.flatnonzero(control)
            text.put(odd, pa.array(_json_of(typed.take(pa.array(odd, pa.int64())).to_pylist()), pa.string()))
        elif kind in (FieldType.integer, FieldType.boolean):
            text = kernels.Gather(pc.fill_null(typed.cast(pa.string()), "null"), len(typed))
        else:  # floats as repr, dates and times as isoformat: Python's own text
            text = kernels.Gather(pa.nulls(1, pa.string()), len(typed), everywhere=True)
            text.put(rows, pa.array(_json_of(typed.take(pa.array(rows, pa.int64())).to_pylist()), pa.string()))
        # Values Python coerced: from those values themselves, exactly as record_uuid reads them.
        text.put(self.python_rows, pa.array(_json_of(self.python_values), pa.string()))
        return text.take(rows)


def _json_of(values: list[Any]) -> list[str]:
    return [json.dumps(_canonical(v), ensure_ascii=False) for v in values]


def _judge_column(column: pa.Array | None, field: FieldSpec, rows: int) -> _Cells:
    arrow_type = field.type.arrow
    if column is None or pa.types.is_null(column.type):
        return _Cells(None, pa.nulls(rows, arrow_type), np.zeros(rows, bool), np.ones(rows, bool))
    present = kernels.mask(column.is_valid())
    if _text(column.type):
        text = column if pa.types.is_string(column.type) else column.cast(pa.string())
        stripped, trusted, ascii_only = kernels.strip(text)
        trusted &= present
        blank = trusted & kernels.mask(pc.equal(stripped, ""))
        values = trusted & ~blank
        ok, typed = _TEXT_JUDGES[field.type](stripped, values, ascii_only, field)
        missing = ~present | blank
    else:
        ok, typed, missing = _judge_native(column, field, present)
    return _Cells(column, typed, ok, missing)


Judged = tuple[np.ndarray, pa.Array]


def _judge_string(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    ok = values.copy()
    if field.enum is not None:
        ok &= kernels.mask(pc.is_in(stripped, value_set=pa.array(field.enum, pa.string())))
    if field.min_length is not None or field.max_length is not None:
        length = pc.utf8_length(stripped)  # code points, as len()
        if field.min_length is not None:
            ok &= kernels.mask(pc.greater_equal(length, field.min_length))
        if field.max_length is not None:
            ok &= kernels.mask(pc.less_equal(length, field.max_length))
    if field.regex is not None:
        pattern = kernels.re2_fullmatch(field.regex)
        if pattern is None:
            ok[:] = False
        else:
            ok &= ascii_only & kernels.mask(pc.match_substring_regex(stripped, pattern))
    return ok, stripped


def _judge_integer(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    gate = values & ascii_only & kernels.mask(pc.match_substring_regex(stripped, _INTEGER_TEXT))
    text = pc.if_else(pa.array(gate), stripped, pa.scalar(None, pa.string()))
    text = pc.replace_substring_regex(pc.replace_substring_regex(text, r"\.0*$", ""), r"^\+", "")
    numbers = pc.cast(text, pa.int64())
    return gate & _integer_constraints(numbers, field), numbers


def _integer_constraints(numbers: pa.Array, field: FieldSpec) -> np.ndarray:
    ok = np.ones(len(numbers), dtype=bool)
    bounds = kernels.integer_bounds(field.min, field.max)
    if bounds is None:
        return ~ok
    if bounds[0] is not None:
        ok &= kernels.mask(pc.greater_equal(numbers, pa.scalar(bounds[0], pa.int64())))
    if bounds[1] is not None:
        ok &= kernels.mask(pc.less_equal(numbers, pa.scalar(bounds[1], pa.int64())))
    if field.enum is not None:
        ok &= kernels.mask(pc.is_in(numbers, value_set=kernels.integer_enum(field.enum)))
    return ok


def _judge_float(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    gate = values & ascii_only & kernels.mask(pc.match_substring_regex(stripped, _FLOAT_TEXT))
    try:
        numbers = pc.cast(pc.if_else(pa.array(gate), stripped, pa.scalar(None, pa.string())), pa.float64())
    except pa.ArrowInvalid:
        return np.zeros(len(values), dtype=bool), pa.nulls(len(values), pa.float64())
    return gate & _float_constraints(numbers, field), numbers


def _float_constraints(numbers: pa.Array, field: FieldSpec) -> np.ndarray:
    ok = kernels.mask(pc.is_finite(numbers))
    if field.min is not None:
        ok &= kernels.mask(pc.greater_equal(numbers, pa.scalar(field.min, pa.float64())))
    if field.max is not None:
        ok &= kernels.mask(pc.less_equal(numbers, pa.scalar(field.max, pa.float64())))
    if field.enum is not None:
        ok &= kernels.mask(pc.is_in(numbers, value_set=kernels.float_enum(field.enum)))
    return ok


def _judge_boolean(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    lower = pc.ascii_lower(stripped)  # str.lower() of ASCII text
    true = pc.is_in(lower, value_set=_TRUE_VALUES)
    ok = values & ascii_only & (kernels.mask(true) | kernels.mask(pc.is_in(lower, value_set=_FALSE_VALUES)))
    return ok, true


def _judge_date(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    parts = _fields(stripped, values & ascii_only, _DATE_TEXT)
    year, month, day = (kernels.digits(parts[k]) for k in ("y", "m", "d"))
    ok = kernels.mask(parts["y"].is_valid()) & kernels.valid_date(year, month, day)
    days = np.where(ok, kernels.epoch_days(year, month, day), 0).astype(np.int32)
    return ok, pa.array(days, pa.int32(), mask=~ok).cast(pa.date32())


def _judge_datetime(stripped: pa.Array, values: np.ndarray, ascii_only: np.ndarray, field: FieldSpec) -> Judged:
    parts = _fields(stripped, values & ascii_only, _DATETIME_TEXT)
    year, month, day, hour, minute, second, off_hour, off_minute = (
        kernels.digits(parts[k]) for k in ("y", "m", "d", "H", "M", "S", "oh", "om")
    )
    micro = kernels.digits(pc.utf8_rpad(parts["f"], 6, "0"))  # .5 is 500000 microseconds
    ok = kernels.mask(parts["y"].is_valid()) & kernels.valid_date(year, month, day)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (off_hour <= 23) & (off_minute <= 59)
    sign = np.where(kernels.mask(pc.equal(parts["sign"], "-")), -1, 1)
    days = kernels.epoch_days(np.where(ok, year, 1970), np.where(ok, month, 1), np.where(ok, day, 1))
    local = ((days * 24 + hour) * 60 + minute) * 60 + second
    utc = (local - sign * (off_hour * 60 + off_minute) * 60) * 1_000_000 + micro
    ok &= (utc >= kernels.MIN_MICROS) & (utc <= kernels.MAX_MICROS)  # astimezone's OverflowError
    return ok, pa.array(np.where(ok, utc, 0), pa.int64(), mask=~ok).cast(field.type.arrow)


def _fields(stripped: pa.Array, gate: np.ndarray, pattern: str) -> dict[str, pa.Array]:
    """The named groups of `pattern` in the gated values (null elsewhere or without a match)."""
    parts = pc.extract_regex(pc.if_else(pa.array(gate), stripped, pa.scalar(None, pa.string())), pattern)
    return {f.name: child for f, child in zip(parts.type, parts.flatten())}


_TEXT_JUDGES = {
    FieldType.string: _judge_string, FieldType.integer: _judge_integer, FieldType.float: _judge_float,
    FieldType.boolean: _judge_boolean, FieldType.date: _judge_date, FieldType.datetime: _judge_datetime,
}


def _judge_native(column: pa.Array, field: FieldSpec, present: np.ndarray) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(ok, typed, missing) of a column of native values (Parquet, SQL) of a matching type."""
    kind, arrow = field.type, column.type
    rows = len(column)
    missing = ~present
    nothing = np.zeros(rows, dtype=bool), pa.nulls(rows, field.type.arrow), missing
    if kind is FieldType.integer and (
        pa.types.is_signed_integer(arrow) or arrow in (pa.uint8(), pa.uint16(), pa.uint32())
    ):
        numbers = column.cast(pa.int64())
        return present & _integer_constraints(numbers, field), numbers, missing
    if kind is FieldType.float and arrow in (pa.float32(), pa.float64()):
        numbers = column.cast(pa.float64())  # exact widening, as float() of a float32 value
        missing = missing | kernels.mask(pc.is_nan(numbers))  # NaN is a missing value
        return present & _float_constraints(numbers, field), numbers, missing
    if kind is FieldType.boolean and pa.types.is_boolean(arrow):
        return present.copy(), column, missing
    if kind is FieldType.date and arrow == pa.date32():
        days = np.asarray(pc.fill_null(column.cast(pa.int32()), 0).to_numpy(zero_copy_only=False))
        ok = present & (days >= kernels.EPOCH_DAYS_1) & (days <= kernels.EPOCH_DAYS_9999)
        return ok, column, missing
    if kind is FieldType.datetime and arrow in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        micros = column.cast(pa.int64())  # naive is taken as UTC: the same instants
        values = np.asarray(pc.fill_null(micros, 0).to_numpy(zero_copy_only=False))
        ok = present & (values >= kernels.MIN_MICROS) & (values <= kernels.MAX_MICROS)
        return ok, micros.cast(field.type.arrow), missing
    return nothing


def _python_rows(
    table: pa.Table, schema: SchemaSpec, rows: np.ndarray, cells: dict[str, _Cells] | None = None
) -> dict[str, list[Any]]:
    """The per-record path for some rows: typed values, ids, `_errors` and `_raw` of each.
    Given the kernels' `cells`, a row's errors are sought first in the cells they did not find
    valid (`_errors_left`); a row found to have none goes through `validate_record` whole."""
    wanted = [*schema.fields, "_parse_error", "record_uuid"]
    present = [n for n in wanted if n in table.column_names]
    if len(rows) == table.num_rows:  # every row (a small batch): no take
        raw_columns = {n: table.column(n).to_pylist() for n in present}
    else:
        index = pa.array(rows, pa.int64())
        raw_columns = {n: table.column(n).take(index).to_pylist() for n in present}
    judged = (lambda raw, i: _errors_left(raw, schema, cells, int(rows[i]))) if cells else None
    return validated_rows(raw_columns, len(rows), schema, judged)


def validated_rows(
    raw_columns: dict[str, list[Any]], count: int, schema: SchemaSpec,
    errors_left: Callable[[dict[str, Any], int], list[dict[str, str]]] | None = None,
) -> dict[str, list[Any]]:
    """The per-record path on raw values held in Python, by column (each field's, `_parse_error`,
    a source's own `record_uuid`, where present): typed values, ids, `_errors` and `_raw` of each
    of `count` rows. `errors_left(raw, i)` gives a row's errors where the kernels judged some of
    its cells; a row it finds none in, or every row without it, goes through `validate_record`."""
    parse_errors = raw_columns.get("_parse_error") or [None] * count
    # A catalogued dataset read as a source brings its own ids: kept, so a record_uuid never changes.
    given_ids = raw_columns.get("record_uuid") or [None] * count
    out: dict[str, list[Any]] = {name: [] for name in schema.fields}
    ids: list[str | None] = []
    errors_out: list[str | None] = []
    raw_out: list[str | None] = []
    for i in range(count):
        raw = {name: raw_columns[name][i] for name in schema.fields if name in raw_columns}
        if parse_errors[i]:
            values, errors = {n: None for n in schema.fields}, [{"field": "(record)", "reason": parse_errors[i]}]
        else:
            errors = errors_left(raw, i) if errors_left else []
            values = {}  # an invalid record's values are not kept
            if not errors:
                values, errors = validate_record(raw, schema)
        for name in schema.fields:
            out[name].append(None if errors else values[name])
        ids.append(None if errors else given_ids[i] or record_uuid(values, schema))
        errors_out.append(json.dumps(errors, ensure_ascii=False) if errors else None)
        raw_out.append(json.dumps(raw, ensure_ascii=False, default=str) if errors else None)
    return {**out, "record_uuid": ids, ERRORS_COLUMN: errors_out, RAW_COLUMN: raw_out}


def _errors_left(raw: dict[str, Any], schema: SchemaSpec, cells: dict[str, _Cells], row: int) -> list[dict[str, str]]:
    """`validate_record`'s errors of a row, where it has any, judging in Python only the cells the
    kernels did not find valid: a cell they found valid gives `validate_record` no error (the
    kernels' promise), a missing one only the required field's. Most rows on the per-record path
    are invalid by one cell of many: coercing all their cells again cost a tenth of a batch's
    validation (the sample's 200 k rows: 0.62 s, 0.56 without)."""
    errors: list[dict[str, str]] = []
    for name, field in schema.fields.items():
        judged = cells[name]
        if judged.ok[row]:
            continue
        value = None
        if not judged.missing[row]:
            try:
                value = coerce(raw.get(name), field)
            except CoercionError as exc:
                errors.append({"field": name, "reason": str(exc)})
                continue
        if value is None:
            if field.required:
                errors.append({"field": name, "reason": "required field is missing or blank"})
        elif reason := check_constraints(value, field):
            errors.append({"field": name, "reason": reason})
    return errors  # none found: the caller asks validate_record (which also judges the key as a whole)


def per_record_table(table: pa.Table, schema: SchemaSpec) -> pa.Table:
    """The output batch with every row the per-record way (small batches; the benchmark's baseline)."""
    out = _python_rows(table, schema, np.arange(table.num_rows))
    arrays: dict[str, pa.Array] = {"record_uuid": pa.array(out["record_uuid"], pa.string())}
    for name, field in schema.fields.items():
        arrays[name] = pa.array(out[name], type=field.type.arrow)
    for name in (ERRORS_COLUMN, RAW_COLUMN):
        arrays[name] = pa.array(out[name], pa.string())
    for name in SOURCE_COLUMNS:
        if name in table.column_names and name != "_parse_error":
            arrays[name] = table.column(name).combine_chunks()
    return pa.table(arrays)


def _assemble(
    table: pa.Table, schema: SchemaSpec, fast: np.ndarray, cells: dict[str, _Cells], given: pa.Array | None
) -> pa.Table:
    """The output batch: fast rows from the kernels, the others from the per-record path."""
    rows = table.num_rows
    slow_rows = np.flatnonzero(~fast)
    slow = _python_rows(table, schema, slow_rows, cells)

    if given is not None and not pa.types.is_null(given.type):
        given = given if pa.types.is_string(given.type) else given.cast(pa.string())
        ids = kernels.Gather(given, rows)
        kept = kernels.mask(given.is_valid()) & ~kernels.mask(pc.equal(given, ""))
    else:
        ids = kernels.Gather(pa.nulls(1, pa.string()), rows, everywhere=True)
        kept = np.zeros(rows, dtype=bool)
    need = np.flatnonzero(fast & ~kept)
    if len(need):
        ids.put(need, _record_uuids(schema, cells, need))
    ids.put(slow_rows, pa.array(slow["record_uuid"], pa.string()))

    arrays: dict[str, pa.Array] = {"record_uuid": ids.take()}
    for name, field in schema.fields.items():
        if name in cells:
            arrays[name] = cells[name].output(field, fast, slow_rows, slow[name])
        else:
            typed = kernels.Gather(pa.nulls(1, field.type.arrow), rows, everywhere=True)
            typed.put(slow_rows, pa.array(slow[name], type=field.type.arrow))
            arrays[name] = typed.take()
    for name in (ERRORS_COLUMN, RAW_COLUMN):
        column = kernels.Gather(pa.nulls(1, pa.string()), rows, everywhere=True)
        column.put(slow_rows, pa.array(slow[name], pa.string()))
        arrays[name] = column.take()
    for name in SOURCE_COLUMNS:
        if name in table.column_names and name != "_parse_error":
            arrays[name] = table.column(name).combine_chunks()
    return pa.table(arrays)


def _record_uuids(schema: SchemaSpec, cells: dict[str, _Cells], rows: np.ndarray) -> pa.Array:
    """`record_uuid(values, schema)` of valid rows, from canonical JSON built column by column."""
    names = schema.key or list(schema.fields)
    parts: list[Any] = ["["]
    for i, name in enumerate(names):
        parts.append(("" if i == 0 else ", ") + f"[{json.dumps(name, ensure_ascii=False)}, ")
        parts.append(cells[name].canonical_json(schema.fields[name], rows))
        parts.append("]")
    parts.append("]")
    canonical = pc.binary_join_element_wise(*parts, "").cast(pa.binary())
    return kernels.uuid5_strings(RECORD_NAMESPACE.bytes, canonical.to_pylist())


def _canonical(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


