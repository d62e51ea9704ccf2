"""Spec errors, reported one 'path: reason' line per problem, and the formatting they share."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


class SpecError(Exception):
    """A spec that cannot run; `errors` holds one 'path: reason' line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


def format_loc(loc: tuple[Any, ...]) -> str:
    """('steps', 2, 'params', 'column') -> 'steps[2].params.column'."""
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def pydantic_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    """One 'path: reason' line per pydantic error, under `prefix` (where the model sits in the spec)."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # Drop discriminator tags ('source', 'csv', 'path') and pydantic's own markers.
        if len(loc) > 1 and loc[0] == "source" and loc[1] in (
            "csv", "jsonl", "parquet", "postgres", "dataset", "redis_stream"
        ):
            loc = loc[:1] + loc[2:]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif (err["loc"] and err["loc"][-1] == "[key]") or err["type"] == "invalid_key":
            # pydantic puts the bad key itself in the location, with True shown as 1: report the
            # mapping that holds it, and the key as YAML produced it.
            loc = loc[:-2] if loc[-1] == "[key]" else loc[:-1]
            message = (
                f"key {err['input']!r} is not a string"
                " (YAML reads unquoted on/off/yes/no as booleans: quote it)"
            )
        lines.append(f"{format_loc(loc)}: {message}")
    return lines


def clip(value: Any, limit: int = 300) -> str:
    """The offending input, shortened, so an error shows what was there (text as it is, other
    values as JSON)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
