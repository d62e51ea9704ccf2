"""CSV read by Arrow, wherever Arrow provably gives what the row-exact reader (`csv_records`) gives.

The data after the header is read SEGMENT_BYTES at a time; of what was read, the whole records
in "plain" CSV (below; found by one possessive regex pass, and ended at the last line end after an
even number of quotes) make a segment, which `pyarrow.csv` parses. Plain CSV is text on which both
readers split the same records into the same cells:

- every quote opens a cell (first in it), is doubled inside a quoted cell, or closes one just
  before a delimiter, a line end or the end of the file. Then a line end after an odd number of
  quotes is inside a quoted cell, so the row-exact reader's lines kept together by an open quote
  are exactly the records Arrow reads, and the csv module (strict) parses each as Arrow does.
  (Arrow reads `"a"b` as `ab`; the csv module refuses it. `5" x` is text to both, but its quote
  makes the row-exact reader try the next lines with it: not plain, not here.)
- valid UTF-8, no NUL, no U+FEFF first (Arrow would drop it as a byte-order mark);
- every row has the header's number of cells (Arrow's invalid_row_handler sees every other one:
  wrong counts, and lines of blanks, which the row-exact reader skips, read as one cell);
- no record past the row-exact reader's limits (MAX_CELL_CHARS characters, MAX_RECORD_LINES lines).

A row whose cells are all blank (`str.strip`) is refused as the row-exact reader refuses it.
Blank lines are skipped by both and counted by neither. Everything else (a header that is not one
line with its quotes closed, a single column, a delimiter that is not one ASCII character, the
first text that is not plain or not as above) is left to the row-exact reader, from where this
reader stopped: after a whole record, at a line start outside any quote, which is where the
row-exact reader is after that record too (nothing read ahead, since it joined no lines it did not
parse as one record), with the line number it would have counted there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.io import csv_records as row_exact
from pipelines.io.files import ByteStream

SEGMENT_BYTES = 1 << 20  # read and parsed at a time; a longer record makes its segment longer
MAX_SEGMENT_BYTES = 64 << 20  # a record longer than this is left to the row-exact reader
_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\n|\r(?=[^\n])")  # a lone \r at the end of what was read may be half of \r\n
# Every character str.strip() (str.isspace) takes for white space; tests/unit/io checks the list.
SPACE_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A cell with a character not in SPACE_CHARS is not blank (RE2 syntax, for Arrow).
_NOT_SPACE = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in SPACE_CHARS) + "]"


@dataclass(frozen=True)
class Rest:
    """What the row-exact reader reads on: the unread text and the number of its first line."""

    stream: ByteStream
    line: int
    at_start: bool  # the whole file (a byte-order mark included): nothing was taken from it


class _Prefixed:
    """The bytes already read, then the rest of the stream."""

    def __init__(self, head: bytes, stream: ByteStream) -> None:
        self.head, self.taken, self.stream = memoryview(head), 0, stream

    def read(self, nbytes: int, /) -> bytes:
        if self.taken < len(self.head):
            data = self.head[self.taken : self.taken + nbytes].tobytes()
            self.taken += len(data)
            return data
        return self.stream.read(nbytes)


@dataclass(frozen=True)
class _Plain:
    """Patterns of plain CSV text with a given delimiter, possessive (one pass, no backtracking):
    `text` takes as much plain text as follows (whole cells: it stops before a quote that is not
    plain, or before a quoted cell that is not closed); `open_cell` is a quoted cell that the text
    ends inside (or just after)."""

    text: re.Pattern[bytes]
    open_cell: re.Pattern[bytes]

    @classmethod
    def of(cls, delimiter: bytes) -> _Plain:
        edge = b"[^" + re.escape(delimiter) + rb"\r\n]"  # may not stand before an opening or after a closing quote
        content = rb'[^"]*+(?:""[^"]*+)*+'  # of a quoted cell: no quote but doubled ones; line ends allowed
        opening = rb"(?<!" + edge + rb')"'
        cell = opening + content + rb'"(?!' + edge + rb")"
        return cls(re.compile(rb'[^"]*+(?:' + cell + rb'[^"]*+)*+'), re.compile(opening + content + rb'"?'))

    def records(self, data: bytes, eof: bool) -> tuple[int, bool]:
        """Where the whole plain records at the start of `data` end (0: none), and whether, when there
        is none, the first record is plain as far as it goes (more must be read to know)."""
        match = self.text.match(data)
        assert match is not None  # it matches the empty string
        plain = match.end()
        if eof and plain == len(data):
            return plain, False
        # The last line end outside quotes: after an even number of quotes, the text being plain.
        end, quotes = plain, data.count(b'"', 0, plain)
        while (line_end := max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))) >= 0:
            quotes -= data.count(b'"', line_end, end)
            end = line_end
            after = data[line_end + 1 : line_end + 2]
            # A \r ends a line if what follows is not \n (that \r\n was seen already); last in what
            # was read, it may be half of a \r\n.
            if quotes % 2 == 0 and (data[line_end] == 10 or (after != b"\n" and (after or eof))):
                return line_end + 1, False
        return 0, plain == len(data) or self.open_cell.fullmatch(data, plain) is not None


def _lines(data: bytes) -> int:
    """How many line ends (\\n, \\r\\n, \\r) the text holds, as the row-exact reader counts its lines."""
    lines = data.count(b"\n")
    return lines + data.count(b"\r") - data.count(b"\r\n") if b"\r" in data else lines


class FastCsv:
    """Reads a CSV stream with Arrow while it can; `rest` then says what is left to the row-exact reader."""

    def __init__(self, stream: ByteStream, delimiter: str) -> None:
        self.stream = stream
        self.delimiter = delimiter
        self.buffer = b""
        self.eof = False
        self.line = 1  # the number of the buffer's first line
        self.names: list[str] = []  # Arrow's names of the header's cells
        self.plain = _Plain.of(b",")
        self.rest: Rest | None = None

    def _fill(self, size: int) -> None:
        parts = [self.buffer]
        have = len(self.buffer)
        while have < size and not self.eof:
            data = self.stream.read(size - have)
            if not data:
                self.eof = True
            parts.append(data)
            have += len(data)
        self.buffer = b"".join(parts)

    def _stop(self, at_start: bool = False) -> None:
        self.rest = Rest(_Prefixed(self.buffer, self.stream), self.line, at_start)
        self.buffer = b""

    def header(self) -> list[str] | None:
        """The header's column names, as the row-exact reader reads them; None when the header is
        not a plain line of two names or more (then `rest` is the whole file)."""
        delimiter = self.delimiter
        if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n\x00':
            self._stop(at_start=True)
            return None
        self._fill(max(SEGMENT_BYTES, len(_BOM)))
        start = len(_BOM) if self.buffer.startswith(_BOM) else 0
        while True:
            match = _LINE_END.search(self.buffer, start)
            if match is not None or self.eof or len(self.buffer) >= MAX_SEGMENT_BYTES:
                break
            self._fill(2 * len(self.buffer))
        end = match.end() if match is not None else len(self.buffer) if self.eof else 0
        raw = self.buffer[start:end]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if not text.strip("\r\n") or raw.count(b'"') % 2:
            self._stop(at_start=True)  # the row-exact reader says what is wrong with it, if anything
            return None
        # One line with no quote open: the row-exact reader reads it alone, as this record.
        record = next(row_exact.csv_records(iter([text]), delimiter))
        if record.cells is None or len(record.cells) < 2:
            self._stop(at_start=True)
            return None
        self.buffer, self.line = self.buffer[end:], 2
        self.plain = _Plain.of(delimiter.encode())
        self.names = [f"c{i}" for i in range(len(record.cells))]
        return [name.strip() for name in record.cells]

    def tables(self, positions: dict[str, int | None]) -> Iterator[pa.Table]:
        """The data rows, segment by segment: a string column per name of `positions` (the header
        cell it comes from; None: a column of nulls) and `_parse_error`. Ends early, with `rest`
        set, where the text is not one Arrow provably reads as the row-exact reader does."""
        size = SEGMENT_BYTES
        while True:
            self._fill(size)
            data = self.buffer
            if not data:
                return
            end, unfinished = self.plain.records(data, self.eof)
            if not end:
                if unfinished and not self.eof and len(data) < MAX_SEGMENT_BYTES:
                    size = 2 * len(data)  # a record longer than what was read
                    continue
                self._stop()
                return
            size = SEGMENT_BYTES
            segment = data[:end]
            table = self._read(segment, positions)
            if table is None:
                self._stop()
                return
            self.buffer = data[end:]
            self.line += _lines(segment)
            if table.num_rows:
                yield table

    def _read(self, segment: bytes, positions: dict[str, int | None]) -> pa.Table | None:
        """The segment's rows, or None when it is not provably read as the row-exact reader reads it."""
        if not segment.strip(b"\r\n"):  # blank lines only
            return pa.table({**{name: pa.array([], pa.string()) for name in positions},
                             "_parse_error": pa.array([], pa.string())})
        if (
            len(segment) > row_exact.MAX_CELL_CHARS  # then a cell or a record could be past the limit
            or segment.startswith(_BOM)
            or b"\x00" in segment
            or not _utf8(segment)
        ):
            return None
        invalid: list[Any] = []

        def refuse(row: Any) -> str:
            invalid.append(row)
            return "skip"

        names = self.names
        try:
            cells = pacsv.read_csv(
                pa.py_buffer(segment),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(segment) + 1),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter, quote_char='"', double_quote=True, escape_char=False,
                    newlines_in_values=True, ignore_empty_lines=True, invalid_row_handler=refuse,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in names}, check_utf8=True, null_values=[],
                    strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowException:  # whatever Arrow cannot read is the row-exact reader's
            return None
        if invalid or cells.num_columns != len(names):
            return None
        columns = [cells.column(name).combine_chunks() for name in names]
        rows = cells.num_rows
        # A record spans 1 + the line ends in its cells: at most all the segment's line ends but
        # those the other records end with (all but the last end with one).
        most = row_exact.MAX_RECORD_LINES
        if _lines(segment) - rows + 2 > most and _most_lines(columns) > most:
            return None
        blank = _blank_rows(columns)
        out: dict[str, pa.Array] = {}
        for name, position in positions.items():
            if position is None:
                out[name] = pa.nulls(rows, pa.string())
            elif blank is None:
                out[name] = columns[position]
            else:
                out[name] = pc.if_else(blank, pa.scalar(None, pa.string()), columns[position])
        if blank is None:
            out["_parse_error"] = pa.nulls(rows, pa.string())
        else:
            reason = pa.scalar(f"blank row: all {len(names)} cells are empty", pa.string())
            out["_parse_error"] = pc.if_else(blank, reason, pa.scalar(None, pa.string()))
        return pa.table(out)


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _most_lines(columns: list[pa.Array]) -> int:
    """The most lines a record of these cells spans: 1 + the line ends inside its quoted cells."""
    total = pa.array([1] * len(columns[0]), pa.int64())
    for column in columns:
        for end, sign in (("\n", 1), ("\r", 1), ("\r\n", -1)):
            counted = pc.cast(pc.count_substring(column, end), pa.int64())
            total = pc.add(total, counted) if sign > 0 else pc.subtract(total, counted)
    most = pc.max(total).as_py()
    return int(most) if most is not None else 0


def _blank_rows(columns: list[pa.Array]) -> pa.Array | None:
    """True for each row whose cells are all blank as `str.strip()` sees them; None when there is none."""
    rows = pc.indices_nonzero(pc.invert(pc.match_substring_regex(columns[0], _NOT_SPACE)))
    for column in columns[1:]:
        if not len(rows):
            return None
        rows = pc.filter(rows, pc.invert(pc.match_substring_regex(pc.take(column, rows), _NOT_SPACE)))
    # The few left are checked as the row-exact reader checks them.
    blank = [i for i in rows.to_pylist() if not any(str(c.as_py()).strip() for c in (col[i] for col in columns))]
    if not blank:
        return None
    mask = [False] * len(columns[0])
    for i in blank:
        mask[i] = True
    return pa.array(mask, pa.bool_())
