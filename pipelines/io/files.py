"""The files sources read: formats by extension, UTF-8 text lines, and the error of a source that
cannot be read at all. Light to import (no Ray): the CLI checks inputs with it before joining a
cluster."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from pipelines.spec.workflow import FileKind

EXTENSIONS: dict[FileKind, list[str]] = {
    "csv": ["csv", "txt"],
    "jsonl": ["jsonl", "json", "ndjson"],
    "parquet": ["parquet"],
}


class SourceError(Exception):
    """A source that cannot be read at all (missing file, missing required columns...)."""


def text_lines(stream: pa.NativeFile, path: str) -> Iterator[str]:
    """The lines of a UTF-8 text file (a BOM dropped, line ends kept for the csv module);
    SourceError at the first chunk that is not UTF-8."""
    text = io.TextIOWrapper(io.BufferedReader(_RawAdapter(stream)), encoding="utf-8-sig", newline="")
    try:
        yield from text
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start} of a chunk)") from None


class _RawAdapter(io.RawIOBase):
    """Lets io.BufferedReader pull from a pyarrow input stream."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
