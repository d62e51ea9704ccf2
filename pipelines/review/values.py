"""Review values between Arrow columns and the JSON the review tables store."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa


def to_json(value: Any) -> Any:
    """A cell as a JSON value: dates and times as ISO 8601 text."""
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any, arrow_type: pa.DataType) -> Any:
    """A stored JSON value back as what an Arrow column of this type takes."""
    if value is None:
        return None
    if pa.types.is_date(arrow_type) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if pa.types.is_timestamp(arrow_type) and isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value
