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
from typing import Any

import pyarrow as pa

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


def validate_table(table: pa.Table, schema: SchemaSpec) -> pa.Table:
    """Validate an Arrow batch of raw records; every row comes back, valid or not.

    Output columns: record_uuid, the declared fields (typed), `_errors` (JSON list or null),
    `_raw` (JSON of the raw values, only for invalid rows) and any source columns present.
    """
    raw_columns = {name: table.column(name).to_pylist() for name in table.column_names}
    rows = table.num_rows
    parse_errors = raw_columns.get("_parse_error") or [None] * rows
    # A catalogued dataset read as a source brings its own ids: kept, so a record_uuid never changes.
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


def _canonical(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


