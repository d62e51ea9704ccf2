"""Records given as JSON (JSON Lines files, API requests, stream messages) as the raw text values
a CSV row would hold, so that every source validates alike. Light to import (no Ray)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipelines.spec.errors import clip
from pipelines.spec.workflow import FieldType, SchemaSpec


def text_value(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold, so both formats validate alike."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def parse_json(text: str) -> tuple[Any, str | None]:
    """(the value, None), or (None, why the text is not JSON): also when it nests past the
    parser's depth or holds a number of more digits than Python converts."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg.removesuffix(' at')} at column {exc.colno}"  # "Unterminated string starting at"
    except (RecursionError, ValueError) as exc:
        return None, beyond_json_limits(exc)


def ends_inside(text: str) -> bool:
    """Whether JSON text that does not parse stops inside a value — the end of a cut-short file —
    rather than breaking a rule before its end."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(text) or exc.msg.startswith("Unterminated string")
    except (RecursionError, ValueError):
        return False
    return False


def beyond_json_limits(exc: RecursionError | ValueError) -> str:
    """Why json.loads refused text that is well-formed: it nests past the parser's depth (a
    RecursionError), or holds an integer of more digits than Python converts (a ValueError)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def json_record(obj: Any, schema: SchemaSpec) -> tuple[dict[str, str | None], str | None]:
    """A parsed JSON record as the text values of the declared fields, or why it is not one.

    Shared by JSON Lines files and the online API, so both accept and reject the same records.
    A string field takes only a JSON string (a number, boolean, array or object there is a
    mistake, not text). JSON can spell a lone surrogate (\\ud800) that is not text at all: that
    record is malformed, rather than a crash of the whole block when it becomes an Arrow string.
    """
    if not isinstance(obj, dict):
        return {}, f"expected a JSON object, got {type(obj).__name__}"
    for name, field in schema.fields.items():
        value = obj.get(name)
        if field.type is FieldType.string and value is not None and not isinstance(value, str):
            return {}, f"{name}: expected a string, got {json_type(value)} {clip(value, 60)}"
    values = {name: text_value(obj.get(name)) for name in schema.fields}
    for name, value in values.items():
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return {}, f"{name}: not valid Unicode (lone surrogate {value[exc.start]!r} at character {exc.start})"
    return values, None


def json_columns(records: Sequence[Any], schema: SchemaSpec, unparsed: Sequence[str | None] | None = None
                 ) -> dict[str, list[str | None]]:
    """Records as `json_record` reads them, by column: each field's text values and `_parse_error`
    (why a record is not one; `unparsed` holds why a record could not be read at all, if it could not)."""
    columns: dict[str, list[str | None]] = {name: [] for name in schema.fields}
    parse_errors: list[str | None] = []
    for i, record in enumerate(records):
        reason = unparsed[i] if unparsed else None
        values, error = ({}, reason) if reason else json_record(record, schema)
        parse_errors.append(error)
        for name, column in columns.items():
            column.append(values.get(name))
    columns["_parse_error"] = parse_errors
    return columns
