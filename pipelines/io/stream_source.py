"""A Redis stream as a source of records: one consumer of a consumer group, read in micro-batches.

A message is one record: in format `json`, the JSON object in its field `field` (default
`record`); in format `fields`, its own fields are the record's raw values. A message that is not
a record (no such field, not JSON, not an object, not UTF-8) is not dropped: `decode` gives the
reason, and validation quarantines it like a malformed CSV row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from pipelines.io.json_records import beyond_json_limits
from pipelines.spec.workflow import RedisStreamSource

Message = tuple[str, dict[bytes, bytes]]


@dataclass
class Decoded:
    record: Any  # the parsed record (None when it could not be read)
    error: str | None  # why the message is not a record, or None
    raw: str  # the message as text, for the quarantine of a malformed one


def decode(fields: dict[bytes, bytes], source: RedisStreamSource) -> Decoded:
    """The record a message holds, or why it holds none."""
    text: dict[str, str] = {}
    for key, value in fields.items():
        text[key.decode("utf-8", "backslashreplace")] = value.decode("utf-8", "backslashreplace")
    raw = json.dumps(text, ensure_ascii=False, sort_keys=True)
    try:
        values = {key.decode("utf-8"): value.decode("utf-8") for key, value in fields.items()}
    except UnicodeDecodeError as exc:
        return Decoded(None, f"message is not valid UTF-8 ({exc.reason} at byte {exc.start})", raw)
    if source.format == "fields":
        return Decoded(values, None, raw)
    if source.field not in values:
        present = ", ".join(sorted(values)) or "none"
        return Decoded(None, f"message has no field {source.field!r} (fields: {present})", raw)
    try:
        return Decoded(json.loads(values[source.field]), None, raw)
    except json.JSONDecodeError as exc:
        return Decoded(None, f"field {source.field!r} is not JSON: {exc.msg} at character {exc.pos}", raw)
    except (RecursionError, ValueError) as exc:  # not a bad message for ever: never read again after a restart
        return Decoded(None, f"field {source.field!r} is not JSON: {beyond_json_limits(exc)}", raw)


def id_key(message_id: str) -> tuple[int, int]:
    """A stream id ('1700000000000-3') as numbers, the order Redis gives ids."""
    millis, _, seq = message_id.partition("-")
    return int(millis), int(seq or 0)


class StreamReader:
    """XREADGROUP/XAUTOCLAIM/XACK for one consumer of the source's group. Entries stay pending in
    the group until `ack`: a consumer that dies leaves them there for the next to claim."""

    def __init__(self, url: str, source: RedisStreamSource, consumer: str) -> None:
        self.source, self.consumer = source, consumer
        # A read blocks up to block_ms: the socket must wait longer than that.
        self.client = redis.Redis.from_url(
            url, socket_timeout=source.block_ms / 1000 + 10, socket_connect_timeout=5, health_check_interval=30
        )

    def ensure_group(self) -> None:
        try:
            start = "0" if self.source.start == "earliest" else "$"
            self.client.xgroup_create(self.source.stream, self.source.group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def oldest_pending(self) -> str | None:
        """The id of the oldest message delivered to the group and not acknowledged."""
        summary = self.client.xpending(self.source.stream, self.source.group)
        return _text(summary["min"]) if summary["pending"] else None

    def claim_pending(self, after: str) -> tuple[str, list[Message]]:
        """Pending messages from id `after` on, whoever they were delivered to: (next id or '0-0'
        when none are left, messages). Entries deleted from the stream meanwhile are dropped."""
        reply = self.client.xautoclaim(
            self.source.stream, self.source.group, self.consumer, 0, start_id=after, count=self.source.batch_size
        )
        return _text(reply[0]), [(_text(i), f) for i, f in reply[1] if f is not None]

    def read_new(self) -> list[Message]:
        """Up to batch_size messages never delivered to the group, waiting up to block_ms."""
        reply = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None, self.client.xreadgroup(
            self.source.group, self.consumer, {self.source.stream: ">"},
            count=self.source.batch_size, block=self.source.block_ms,
        ))
        return [(_text(i), f) for _, messages in reply or [] for i, f in messages]

    def ack(self, ids: list[str]) -> None:
        if ids:
            self.client.xack(self.source.stream, self.source.group, *ids)

    def close(self) -> None:
        self.client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
