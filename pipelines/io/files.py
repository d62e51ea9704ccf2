"""The files sources read: formats by extension, UTF-8 text lines decoded one at a time, and the
error of a source that cannot be read at all. Light to import (no Ray): the CLI checks inputs with
it before joining a cluster."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any, Protocol

from pipelines.spec.errors import clip
from pipelines.spec.workflow import FileKind

# How surrogateescape spells a byte that is not UTF-8.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")

EXTENSIONS: dict[FileKind, list[str]] = {
    "csv": ["csv", "txt"],
    "jsonl": ["jsonl", "json", "ndjson"],
    "parquet": ["parquet"],
}


class ByteStream(Protocol):
    """What text is read from: a pyarrow input stream, or anything else with its read()."""

    def read(self, nbytes: int, /) -> bytes: ...


class SourceError(Exception):
    """A source that cannot be read at all (missing file, missing required columns...)."""


def text_lines(stream: ByteStream, bom: bool = True) -> Iterator[str]:
    """The lines of a UTF-8 text file (a BOM dropped, line ends kept for the csv module). A byte that
    is not UTF-8 does not stop the file: it comes through as a lone surrogate, so that the row
    holding it is refused alone (see `undecodable`). `bom=False` reads text that starts inside a
    file, after a line end, where U+FEFF is a character like any other."""
    yield from io.TextIOWrapper(
        io.BufferedReader(_RawAdapter(stream)), encoding="utf-8-sig" if bom else "utf-8",
        errors="surrogateescape", newline=""
    )


def undecodable(text: str) -> str | None:
    """Why a line of `text_lines` is not UTF-8, with its bytes escaped, or None when it is."""
    if not _ESCAPED_BYTE.search(text):
        return None
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        return f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the row): {clip(shown)}"
    return None


class _RawAdapter(io.RawIOBase):
    """Lets io.BufferedReader pull from a pyarrow input stream."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
