"""The CSV fast path (Arrow, `pipelines/io/csv_fast.py`) gives the row-exact reader's blocks, table
for table, for every file: each is read both ways (`csv_blocks(fast=...)`) and compared.

Files are generated: random cells with delimiters, quotes, line breaks (LF, CRLF, CR), Unicode,
blanks; blank lines and rows of blank cells; and, in the dirty ones, what the fast path must leave
to the row-exact reader: wrong cell counts, stray and unclosed quotes, a byte-order mark, bytes that
are not UTF-8, NUL, U+FEFF first on a line, lines of spaces, header quirks, other delimiters. Small
segments and blocks put their edges everywhere.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

import pipelines.io.csv_fast as csv_fast
import pipelines.io.csv_records as csv_records
import pipelines.io.sources as sources
from pipelines.io.csv_fast import SPACE_CHARS, FastCsv
from pipelines.io.files import SourceError
from pipelines.io.sources import RecordFileDatasource, csv_blocks
from pipelines.spec.workflow import SchemaSpec

FIELDS = {"org_id": {"required": True}, "name": {}, "employees": {"type": "integer"}, "note": {}}
NAMES = list(FIELDS)
PATH = "/data/in/orgs.csv"
# Pieces of cells: delimiters, quotes, line breaks, Unicode (U+2028, NBSP, NEL are str.isspace, U+FEFF not).
PIECES = ["a", "Acme", "42", "", " ", "  ", "\t", ",", ";", "|", '"', '""', "\n", "\r\n", "\r", "é", "株式", "🚗",
          "\u2028", "\xa0", "\x85", "\x1f", "\x0b", "x y", "\u3000", "Inc.", "o'k"]
WORDS = ["ORG-1", "ORG-22", "Beta", "12", "", "Société Générale", "x", "  padded  "]


def _datasource() -> RecordFileDatasource:
    ds = RecordFileDatasource.__new__(RecordFileDatasource)
    ds.kind, ds.delimiter, ds.keep_columns = "csv", ",", ()
    ds.schema_spec = SchemaSpec.model_validate({"fields": FIELDS})
    return ds


def read(data: bytes, delimiter: str, fast: bool) -> list[pa.Table] | str:
    """The blocks of `data`, or the SourceError it raises."""
    try:
        return list(csv_blocks(pa.BufferReader(data), PATH, NAMES, delimiter, _datasource()._require, fast=fast))
    except SourceError as exc:
        return f"SourceError: {exc}"


def assert_same(data: bytes, delimiter: str = ",") -> list[pa.Table] | str:
    fast, exact = read(data, delimiter, True), read(data, delimiter, False)
    if isinstance(fast, str) or isinstance(exact, str):
        assert fast == exact, data
        return exact
    assert [t.to_pylist() for t in fast] == [t.to_pylist() for t in exact], data
    assert len(fast) == len(exact)
    for got, want in zip(fast, exact):
        assert got.schema == want.schema and got.equals(want), data
    return exact


def fully_fast(data: bytes, delimiter: str = ",") -> bool:
    """Whether Arrow reads the whole file (nothing left to the row-exact reader)."""
    reader = FastCsv(pa.BufferReader(data), delimiter)
    header = reader.header()
    if header is None:
        return False
    for _ in reader.tables({name: header.index(name) if name in header else None for name in NAMES}):
        pass
    return reader.rest is None


# Generated files ------------------------------------------------------------------------------------
def _cell(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(WORDS)
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
    if rng.random() < 0.05:
        text = "x\ufeff" + text  # U+FEFF inside a cell: a character like any other
    return text


def _line(cells: list[str], delimiter: str, end: str, rng: random.Random, quote_all: bool) -> str:
    """One record, quoted as CSV writers quote (a cell with a delimiter, quote or line break; all
    cells when `quote_all`; a few others at random)."""
    out = []
    for cell in cells:
        if quote_all or any(c in cell for c in (delimiter, '"', "\r", "\n")) or rng.random() < 0.05:
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return delimiter.join(out) + end


DEFECTS = ["wrong_count", "stray_quote", "unclosed_quote", "bom", "feff_first", "bad_utf8", "nul",
           "space_line", "quoted_blank_line", "mixed_ends", "header_quirk", "no_header", "single_column",
           "missing_required", "delimiter", "unclosed_at_end", "empty"]


def generate(rng: random.Random, defects: frozenset[str] | set[str] = frozenset()) -> tuple[bytes, str]:
    """A CSV file and its delimiter: plain CSV unless `defects` says otherwise."""
    delimiter = rng.choice([",", ",", ",", ";", "\t", "|", " ", rng.choice("^]-\\#.")])
    if "delimiter" in defects:
        delimiter = rng.choice(["é", '"', "\r", "\n", "ab"[:1], ",", "\x00"])
    names = rng.sample([*NAMES, "extra", "other"], rng.randint(1, 6))
    if "org_id" not in names:
        names.insert(rng.randrange(len(names) + 1), "org_id")
    if "missing_required" in defects:
        names = [n for n in names if n != "org_id"] or ["id"]
    if len(names) < 2 and "single_column" not in defects:
        names.append("extra2")
    if "single_column" in defects:
        names = ["org_id"]
    if rng.random() < 0.2:
        names.append(rng.choice(names))  # a duplicate name: the first one counts
    header_cells = [f" {n} " if rng.random() < 0.15 and delimiter not in " \t" else n for n in names]
    if "header_quirk" in defects:
        header_cells = rng.choice([
            [*header_cells, ""], [f'"{c}"' for c in header_cells], ['"org_id', "name"], ['"org""id"', "name"],
            [*header_cells[:-1], header_cells[-1] + '"'], ["org_id\ufeff", "name"], ["\ufefforg_id", "name"],
        ])
    end = rng.choice(["\n", "\r\n", "\n", "\r"])
    quote_all = rng.random() < 0.2
    lines = [] if "no_header" in defects else [delimiter.join(header_cells) + end]
    if "header_quirk" in defects and rng.random() < 0.3:
        lines = [rng.choice(["\n", "   \n", end + delimiter.join(header_cells) + end])]
    for _ in range(rng.randint(0, 30)):
        count = len(names)
        if "wrong_count" in defects and rng.random() < 0.2:
            count = max(0, count + rng.choice([-2, -1, 1, 2]))
        row = [_cell(rng) for _ in range(count)]
        if rng.random() < 0.08:
            row = [rng.choice(["", " ", "\t", "\xa0", "\u3000"]) for _ in range(count)]  # a row of blanks
        if len(row) == 1 and not row[0].strip() and "wrong_count" not in defects:
            row = ["ORG-x"]  # one blank cell is a blank line to the row-exact reader; clean files have none
        line = _line(row, delimiter, rng.choice(["\n", "\r\n", "\r"]) if "mixed_ends" in defects else end,
                     rng, quote_all)
        if rng.random() < 0.1:
            line = end + line  # blank lines are not rows
        if "stray_quote" in defects and rng.random() < 0.15:
            i = rng.randrange(len(line) + 1)
            line = line[:i] + '"' + line[i:]
        if "unclosed_quote" in defects and rng.random() < 0.1:
            line = f'{delimiter}"open' + line
        if "feff_first" in defects and rng.random() < 0.15:
            line = "\ufeff" + line
        if "space_line" in defects and rng.random() < 0.1:
            line = rng.choice(["   ", "\t", "\xa0", " " + delimiter]) + end + line
        if "quoted_blank_line" in defects and rng.random() < 0.1:
            line = rng.choice(['""', '" "', '"\n"']) + end + line
        lines.append(line)
    text = "".join(lines)
    if rng.random() < 0.2:
        text = text.rstrip("\r\n")  # no line end after the last record
    if "unclosed_at_end" in defects:
        text += '"never closed' + delimiter + "x" + end
    data = text.encode("utf-8")
    if "bom" in defects:
        data = b"\xef\xbb\xbf" + data
    not_utf8 = [b"\xe9", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]  # a surrogate, past U+10FFFF
    for kind, bad in (("bad_utf8", not_utf8), ("nul", [b"\x00"])):
        if kind in defects:
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(data) + 1)
                data = data[:i] + rng.choice(bad) + data[i:]
    if "empty" in defects:
        data = rng.choice([b"", b"\xef\xbb\xbf", b"\n", b"\r\n\r\n"])
    return data, delimiter


@pytest.fixture(params=[(1, 1), (2, 3), (7, 40), (10_000, 1 << 20)], ids=["tiny", "small", "medium", "default"])
def edges(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows per block and bytes per segment: small ones put their edges everywhere."""
    rows, segment = request.param
    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", rows)
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", segment)


@pytest.mark.parametrize("seed", range(8))
def test_plain_files_are_read_by_arrow_alone_and_as_the_row_exact_reader_reads_them(edges: None, seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(25):
        data, delimiter = generate(rng)
        assert_same(data, delimiter)
        assert fully_fast(data, delimiter), data


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_kind_of_dirty_file_reads_as_the_row_exact_reader_reads_it(edges: None, defect: str) -> None:
    rng = random.Random(defect)
    for _ in range(20):
        assert_same(*generate(rng, {defect}))


@pytest.mark.parametrize("seed", range(6))
def test_files_with_several_defects_read_as_the_row_exact_reader_reads_them(edges: None, seed: int) -> None:
    rng = random.Random(2000 + seed)
    for _ in range(30):
        assert_same(*generate(rng, set(rng.sample(DEFECTS, rng.randint(1, 4)))))


# What the row-exact reader refuses, the fast path leaves to it -----------------------------------------
def test_the_space_characters_are_those_str_strip_removes() -> None:
    assert set(SPACE_CHARS) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_a_row_of_blank_cells_is_refused_by_arrow_as_by_the_row_exact_reader() -> None:
    data = "org_id,name,note\nORG-1,Acme,x\n,,\n \t,\xa0,\u3000\n\"\",\" \",\nORG-5,\"\",\n".encode()
    blocks = assert_same(data)
    assert fully_fast(data)
    rows = [r for t in blocks for r in t.to_pylist()]
    assert [(r["org_id"], r["_parse_error"]) for r in rows] == [
        ("ORG-1", None), *[(None, "blank row: all 3 cells are empty")] * 3, ("ORG-5", None),
    ]


def test_a_bad_row_hands_the_rest_of_the_file_to_the_row_exact_reader_at_its_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", 64)
    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", 4)
    good = "".join(f'ORG-{i},"N\r\n{i}"\r\n' for i in range(1, 10))
    data = f'org_id,name\r\n{good}\r\nORG-x,"Beta"x\r\nORG-10,"a\nb"\r\nORG-11,"c\n'.encode()
    reader = FastCsv(pa.BufferReader(data), ",")
    header = reader.header()
    assert header == ["org_id", "name"]
    assert len(list(reader.tables({"org_id": 0, "name": 1}))) > 1
    assert reader.rest is not None and reader.rest.line == 21  # the bad row's line: the row-exact reader reads on
    blocks = assert_same(data)
    assert [t.num_rows for t in blocks] == [4, 4, 4]  # the same blocks, whoever read their rows
    assert [(r["_source_row"], r["org_id"], r["name"], r["_parse_error"]) for r in blocks[-1].to_pylist()] == [
        (9, "ORG-9", "N\r\n9", None),  # read by Arrow
        (10, None, None, "malformed CSV near line 21: ',' expected after '\"'"),
        (11, "ORG-10", "a\nb", None),
        (12, None, None, "malformed CSV near line 24: unexpected end of data"),
    ]


def test_a_cell_past_the_limit_is_left_to_the_row_exact_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_records, "MAX_CELL_CHARS", 1000)
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", 500)
    small = "".join(f"ORG-{i},Acme\n" for i in range(50))
    for cell in ["x" * 2000, '"' + "x" * 2000 + '"', '"' + "y\n" * 600 + '"']:
        assert_same(f"org_id,name\n{small}ORG-big,{cell}\n{small}".encode())


def test_a_record_of_more_lines_than_the_limit_is_left_to_the_row_exact_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_records, "MAX_RECORD_LINES", 5)
    within = 'org_id,name\nORG-1,"a\nb\nc\nd\ne"\nORG-2,x\n'.encode()
    assert_same(within)
    assert fully_fast(within)
    for data in ['org_id,name\nORG-1,"a\nb\nc\nd\ne\nf"\nORG-2,x\n', 'org_id,name\nORG-1,"a\nb\nc",";\nd\ne\n"\n']:
        assert_same(data.encode())
        assert not fully_fast(data.encode())


def test_a_record_longer_than_a_segment_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", 16)
    data = ("org_id,name\nORG-1,\"" + "long, quoted\r\n" * 50 + '"\nORG-2,' + "z" * 500 + "\n").encode()
    assert_same(data)
    assert fully_fast(data)


def test_a_record_past_the_most_a_segment_holds_is_left_to_the_row_exact_reader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", 8)
    monkeypatch.setattr(csv_fast, "MAX_SEGMENT_BYTES", 64)
    for data in [f'org_id,name\nORG-1,"{"x" * 100}"\nORG-2,b\n', f'org_id,name\nORG-1,{"x" * 100}\nORG-2,b\n',
                 f'org_id,{"n" * 100}\nORG-1,a\n', 'org_id,name\nORG-1,a\nORG-2,"never closed\n' + "z\n" * 40]:
        assert_same(data.encode())
        assert not fully_fast(data.encode())


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbforg_id,name\nORG-1,a\n",  # a byte-order mark before the header: dropped by both
    "org_id,name\nORG-1,a\n\ufeffORG-2,b\n".encode(),  # U+FEFF first on a line: Arrow would drop it
    b"org_id,name\n\xef\xbb\xbfORG-2,b\n",
    b"org_id,name\nORG-1,\"x\"\"y\"\"\"\r\nORG-2,\"\r\"\r",
    b"org_id,name\rORG-1,a\rORG-2,b\r",  # old Mac line ends
    b"org_id,name\r\nORG-1,a\r",
    b"org_id,name",
    b"org_id,name\n",
    b"org_id,name\n\n\r\n\r",
    b"org_id\nORG-1\n \nORG-2\n",  # one column: a blank cell is a blank line
    b'"org_id","name"\n"ORG-1","a"\n',
    b'"org_id\n",name\nORG-1,a\n',
    b"org_id;name\nORG-1;a,b\n",
], ids=lambda d: repr(d)[:40])
def test_edge_files(data: bytes) -> None:
    assert_same(data, ";" if b";" in data[:12] else ",")


def test_the_datasource_reads_csv_with_the_fast_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    tables = FastCsv.tables

    def counted(self: FastCsv, positions: dict[str, int | None]) -> Any:
        calls.append(1)
        return tables(self, positions)

    monkeypatch.setattr(FastCsv, "tables", counted)
    path = tmp_path / "orgs.csv"
    path.write_bytes(b"org_id,name,employees\nORG-1,Acme,12\n")
    (table,) = _datasource()._read_stream(pa.input_stream(str(path)), str(path))
    assert calls and table.to_pylist()[0]["org_id"] == "ORG-1"


def test_a_big_file_crosses_segments_and_blocks_as_the_row_exact_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_fast, "SEGMENT_BYTES", 1 << 16)
    monkeypatch.setattr(sources, "ROWS_PER_BLOCK", 1000)
    rng = random.Random(5)
    rows = [_line([f"ORG-{i}", _cell(rng), str(i), _cell(rng)], ",", "\r\n", rng, False) for i in range(6000)]
    data = ("org_id,name,employees,note\r\n" + "".join(rows)).encode()
    blocks = assert_same(data)
    assert fully_fast(data)
    assert [t.num_rows for t in blocks] == [1000] * 6
