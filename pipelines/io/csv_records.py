"""CSV text as records, one malformed record never taking good ones with it.

A quoted cell may hold line breaks, so a record can span lines. When the lines a quote kept open
do not parse as one record (an unclosed quote), the first line alone is the malformed record and
the lines after it are read again as themselves: a bad row costs only itself.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.io.files import undecodable

# The largest cell read, in characters; a row with a larger one is quarantined, saying so. (The
# csv module's own default, 128 KiB, would refuse an ordinary long description.)
MAX_CELL_CHARS = 16 * 1024 * 1024
# The most lines one record may span: past it, the open quote is taken for an unclosed one.
MAX_RECORD_LINES = 10_000


@dataclass(frozen=True)
class CsvRecord:
    line: int  # the line it starts on (1 = the file's first line)
    cells: list[str] | None  # None when the record cannot be read
    error: str | None  # why not


def csv_records(lines: Iterator[str], delimiter: str, first_line: int = 1) -> Iterator[CsvRecord]:
    """The records of CSV text given as lines (line ends kept), in order; blank lines are records
    of no cells. `first_line` is the number of the first line given (text read from inside a file)."""
    csv.field_size_limit(MAX_CELL_CHARS)  # process-wide in the csv module: set by every reader, to this
    ahead: deque[tuple[int, str]] = deque()  # lines read, to be read again as records of their own
    numbered = enumerate(lines, start=first_line)

    def next_line() -> tuple[int, str] | None:
        return ahead.popleft() if ahead else next(numbered, None)

    while (first := next_line()) is not None:
        group, text = [first], first[1]
        while _quote_open(text) and len(group) < MAX_RECORD_LINES and len(text) <= MAX_CELL_CHARS:
            following = next_line()
            if following is None:
                break
            group.append(following)
            text += following[1]
        record = _parse(text, first[0], delimiter)
        if record.error is not None and len(group) > 1:
            ahead.extendleft(reversed(group[1:]))
            record = _parse(first[1], first[0], delimiter)
        yield record


def _quote_open(text: str) -> bool:
    """Whether the text ends inside a quoted cell: an odd number of quotes (an escaped quote is two)."""
    return text.count('"') % 2 == 1


def _parse(text: str, line: int, delimiter: str) -> CsvRecord:
    if '"' not in text:  # most rows: no quoting, one line, so the cells are the split (5x faster)
        reason = undecodable(text)
        if reason is not None:
            return CsvRecord(line, None, reason)
        cells = body.split(delimiter) if (body := text.rstrip("\r\n")) else []
        if len(body) > MAX_CELL_CHARS and max(map(len, cells)) > MAX_CELL_CHARS:
            return CsvRecord(line, None, f"malformed CSV near line {line}: {_too_long()}")
        return CsvRecord(line, cells, None)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        return CsvRecord(line, None, f"malformed CSV near line {line + reader.line_num - 1}: {_reason(exc)}")
    if len(rows) > 1:  # the lines are several records: what opened the quote was not one
        return CsvRecord(line, None, f"malformed CSV near line {line}: a quote is not closed")
    reason = undecodable(text)
    if reason is not None:
        return CsvRecord(line, None, reason)
    return CsvRecord(line, rows[0] if rows else [], None)


def _reason(exc: csv.Error) -> str:
    text = str(exc)
    return _too_long() if text.startswith("field larger than field limit") else text


def _too_long() -> str:
    return f"a cell is longer than {MAX_CELL_CHARS:,} characters, the most a CSV cell may hold"
