"""Sources: CSV, JSON Lines and Parquet files (local or s3://), PostgreSQL queries and catalogued
dataset versions.

File rows come out as raw values (strings for text formats) of the declared fields, plus
where they came from: `_source` (file), `_source_row` (1 = first data row) and
`_source_order` (sorts rows in input order across files). A row that cannot be parsed is not
dropped: it comes out with `_parse_error` and is quarantined by validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data.datasource import FileBasedDatasource

from augment_core.storage import StoragePaths
from pipelines.io.csv_fast import FastCsv
from pipelines.io.csv_records import CsvRecord, csv_records
from pipelines.io.files import EXTENSIONS, ByteStream, SourceError, text_lines, undecodable
from pipelines.io.json_records import ends_inside, json_record, parse_json
from pipelines.io.resources import (
    OBJECT_STORE_SHARE,
    READ_CPUS,
    TASK_CPUS,
    block_bytes,
    cluster_cpus,
    in_blocks_of,
    task_args,
)
from pipelines.spec.errors import clip
from pipelines.spec.workflow import (
    DatasetSource,
    FileSource,
    PostgresSource,
    RedisStreamSource,
    SchemaSpec,
    SourceSpec,
    missing_required_columns,
)

ROWS_PER_BLOCK = 10_000


class _RowBuffer:
    """Collects raw rows of one file and hands them out as Arrow tables."""

    def __init__(self, path: str, fields: list[str], text: bool) -> None:
        self.path, self.fields, self.text = path, fields, text
        self.rows: list[dict[str, Any]] = []
        self.row_number = 0

    def add(self, values: dict[str, Any], parse_error: str | None = None) -> None:
        self.row_number += 1
        self.rows.append({**values, "_source_row": self.row_number, "_parse_error": parse_error})

    def full(self) -> bool:
        return len(self.rows) >= ROWS_PER_BLOCK

    def take(self) -> pa.Table:
        rows, self.rows = self.rows, []
        field_type = pa.string() if self.text else None
        columns: dict[str, pa.Array] = {}
        for name in self.fields:
            columns[name] = pa.array([r.get(name) for r in rows], type=field_type, from_pandas=True)
        numbers = [r["_source_row"] for r in rows]
        columns["_source"] = pa.array([self.path] * len(rows), pa.string())
        columns["_source_row"] = pa.array(numbers, pa.int64())
        columns["_source_order"] = pa.array([f"{self.path}\x1f{n:015d}" for n in numbers], pa.string())
        columns["_parse_error"] = pa.array([r["_parse_error"] for r in rows], pa.string())
        return pa.table(columns)


def _header(records: Iterator[CsvRecord], path: str) -> list[str]:
    """The column names of a CSV file's first record; SourceError when there is none to read."""
    first = next(records, None)
    if first is None:
        raise SourceError(f"{path}: empty file, expected a header row")
    if first.cells is None:
        raise SourceError(f"{path}: the header row cannot be read: {first.error}")
    return [name.strip() for name in first.cells]


def csv_blocks(
    f: ByteStream, path: str, fields: list[str], delimiter: str, require: Callable[[str, list[str]], None],
    fast: bool = True,
) -> Iterator[pa.Table]:
    """The blocks of a CSV file: ROWS_PER_BLOCK rows each, the declared fields as text, every row
    kept. Read by Arrow wherever it provably gives what the row-exact reader gives (`csv_fast`),
    by the row-exact reader from where it does not; `fast=False`: by the row-exact reader alone."""
    buffer = _RowBuffer(path, fields, text=True)
    if fast:
        reader = FastCsv(f, delimiter)
        header = reader.header()
        if header is not None:
            require(path, header)
            blocks = _ArrowBlocks(path, fields)
            positions = {name: header.index(name) if name in header else None for name in fields}
            for table in reader.tables(positions):
                yield from blocks.add(table)
            if reader.rest is None:
                yield from blocks.flush()
                return
            # The row-exact reader reads on from a line start after a whole record, into the same block.
            buffer.rows, buffer.row_number = blocks.unsent(), blocks.rows
            records = csv_records(text_lines(reader.rest.stream, bom=False), delimiter, reader.rest.line)
            yield from _csv_rows(records, header, buffer)
            return
        assert reader.rest is not None and reader.rest.at_start
        f = reader.rest.stream  # nothing taken from it
    records = csv_records(text_lines(f), delimiter)
    header = _header(records, path)
    require(path, header)
    yield from _csv_rows(records, header, buffer)


def _csv_rows(records: Iterator[CsvRecord], header: list[str], buffer: _RowBuffer) -> Iterator[pa.Table]:
    """The row-exact reader's rows after the header, added to `buffer`, as blocks."""
    positions = {name: header.index(name) for name in buffer.fields if name in header}
    for record in records:
        row = record.cells
        if row is not None and (not row or (len(row) == 1 and not row[0].strip())):
            continue  # a blank line: not a record, not counted
        if row is None:
            buffer.add({}, record.error)
        elif not any(cell.strip() for cell in row):  # a row of empty cells (,,,) is one, refused
            buffer.add({}, f"blank row: all {len(row)} cells are empty")
        elif len(row) != len(header):
            buffer.add({}, f"malformed CSV row: {len(row)} cells, header has {len(header)}: {clip(row)}")
        else:
            buffer.add({name: row[i] for name, i in positions.items()})
        if buffer.full():
            yield buffer.take()
    if buffer.rows:
        yield buffer.take()


class _ArrowBlocks:
    """Cuts the rows Arrow read (the fields and `_parse_error`) into the blocks _RowBuffer makes."""

    def __init__(self, path: str, fields: list[str]) -> None:
        self.path, self.fields = path, fields
        self.pending: list[pa.Table] = []  # rows read, not yet in a block
        self.sent = 0  # rows in the blocks given

    @property
    def rows(self) -> int:
        """Rows read so far: the number of the last."""
        return self.sent + sum(t.num_rows for t in self.pending)

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        self.pending.append(table)
        while self.rows - self.sent >= ROWS_PER_BLOCK:
            rows = pa.concat_tables(self.pending)
            self.pending = [rows.slice(ROWS_PER_BLOCK)]
            yield self._block(rows.slice(0, ROWS_PER_BLOCK))

    def flush(self) -> Iterator[pa.Table]:
        if self.rows > self.sent:
            rows = pa.concat_tables(self.pending)
            self.pending = []
            yield self._block(rows)

    def unsent(self) -> list[dict[str, Any]]:
        """The rows not yet in a block, as _RowBuffer holds them."""
        if self.rows == self.sent:
            return []
        rows = pa.concat_tables(self.pending).to_pylist()
        for number, row in enumerate(rows, start=self.sent + 1):
            row["_source_row"] = number
        return rows

    def _block(self, table: pa.Table) -> pa.Table:
        first, count = self.sent + 1, table.num_rows
        self.sent += count
        numbers = pa.array(range(first, first + count), pa.int64())
        columns: dict[str, pa.Array] = {name: table.column(name).combine_chunks() for name in self.fields}
        columns["_source"] = pa.array([self.path] * count, pa.string())
        columns["_source_row"] = numbers
        columns["_source_order"] = pc.binary_join_element_wise(
            self.path + "\x1f", pc.utf8_lpad(pc.cast(numbers, pa.string()), 15, "0"), ""
        )
        columns["_parse_error"] = table.column("_parse_error").combine_chunks()
        return pa.table(columns)


def _first_sentence(exc: Exception) -> str:
    return str(exc).split(". ")[0].rstrip(".")


class RecordFileDatasource(FileBasedDatasource):
    """Reads CSV / JSON Lines / Parquet files row-exactly, keeping malformed rows."""

    def __init__(
        self, source: FileSource, schema: SchemaSpec, keep_columns: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(source.path, file_extensions=EXTENSIONS[source.kind], **kwargs)
        self.kind = source.kind
        self.delimiter = source.delimiter
        self.schema_spec = schema
        self.keep_columns = keep_columns  # Parquet columns read besides the declared fields

    def file_count(self) -> int:
        return max(1, len(self._paths()))

    def _open_input_source(self, filesystem: pafs.FileSystem, path: str, **open_args: Any) -> pa.NativeFile:
        # Parquet needs random access to read row group by row group; text formats stream.
        if self.kind == "parquet":
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        yield from {"csv": self._csv, "jsonl": self._jsonl, "parquet": self._parquet}[self.kind](f, path)

    def _require(self, path: str, present: list[str]) -> None:
        missing = missing_required_columns(present, self.schema_spec)
        if missing:
            raise SourceError(f"{path}: required column(s) {missing} are missing; the file has {present}")

    def _csv(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        yield from csv_blocks(f, path, list(self.schema_spec.fields), self.delimiter, self._require)

    def _jsonl(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        fields = list(self.schema_spec.fields)
        buffer = _RowBuffer(path, fields, text=True)
        for number, line in enumerate(text_lines(f), start=1):
            if not line.strip():
                continue
            reason = undecodable(line)
            if reason is not None:
                buffer.add({}, reason)
                continue
            obj, error = parse_json(line.strip())
            if error is not None:
                cut_short = not line.endswith("\n") and ends_inside(line.strip())
                where = f"line {number} is cut short (the file ends inside it)" if cut_short else "invalid JSON"
                buffer.add({}, f"{where}: {error}: {clip(line.strip())}")
                continue
            values, error = json_record(obj, self.schema_spec)
            buffer.add(values, error)
            if buffer.full():
                yield buffer.take()
        if buffer.rows:
            yield buffer.take()

    def _parquet(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        fields = list(self.schema_spec.fields)
        try:
            parquet = pq.ParquetFile(f)
        except pa.ArrowInvalid as exc:  # text, a cut-short upload, an empty file
            raise SourceError(f"{path}: not a Parquet file ({_first_sentence(exc)})") from None
        present = parquet.schema_arrow.names
        self._require(path, present)
        row = 0
        wanted = [n for n in [*fields, *self.keep_columns] if n in present]
        for batch in parquet.iter_batches(batch_size=ROWS_PER_BLOCK, columns=wanted):
            table = pa.Table.from_batches([batch])
            numbers = list(range(row + 1, row + table.num_rows + 1))
            row += table.num_rows
            for name in fields:
                if name not in present:
                    table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
            table = table.append_column("_source", pa.array([path] * table.num_rows, pa.string()))
            table = table.append_column("_source_row", pa.array(numbers, pa.int64()))
            table = table.append_column(
                "_source_order", pa.array([f"{path}\x1f{n:015d}" for n in numbers], pa.string())
            )
            yield table.append_column("_parse_error", pa.nulls(table.num_rows, pa.string()))


def read_source(source: SourceSpec, schema: SchemaSpec, paths: StoragePaths | None = None) -> ray.data.Dataset:
    """The raw records of a source as a Ray Dataset; files on s3:// are read with the storage's
    endpoint (`paths`)."""
    if isinstance(source, RedisStreamSource):
        raise SourceError(f"source: the redis_stream {source.stream!r} never ends: `augment stream start` consumes it")
    if isinstance(source, PostgresSource):
        return _read_postgres(source, schema)
    keep: tuple[str, ...] = ()
    if isinstance(source, DatasetSource):
        if not source.path:
            raise SourceError(f"dataset source {source.name!r} was not resolved to a catalogued version")
        # A catalogued version is Parquet; its record_uuid travels on so validation keeps it.
        source, keep = FileSource(kind="parquet", path=source.path), ("record_uuid",)
    try:
        filesystem = paths.read_filesystem(source.path) if paths is not None else None
        datasource = RecordFileDatasource(source, schema, keep_columns=keep, filesystem=filesystem)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SourceError(f"cannot read {source.kind} source {source.path}: {exc}") from None
    # Read tasks of whole files (at most Ray Data's usual number of them). Left to itself, Ray Data
    # cut the blocks up until it had the number it wanted (8 for a 300-row file): more tasks for
    # every later step, each a process start on a small node. What a task yields (ROWS_PER_BLOCK
    # rows at a time) Ray Data gathers into blocks of up to target_max_block_size: see block_bytes.
    tasks = min(datasource.file_count(), ray.data.DataContext.get_current().read_op_min_num_blocks)
    cpus = cluster_cpus()  # a question to the cluster: asked once
    raw = ray.data.read_datasource(datasource, num_cpus=READ_CPUS, override_num_blocks=tasks, concurrency=cpus)
    # Set on the run's own copy of Ray Data's context, which every later step of its plan shares.
    raw.context.target_max_block_size = block_bytes(datasource.estimate_inmemory_data_size() or 0, cpus)
    raw.context.override_object_store_memory_limit_fraction = OBJECT_STORE_SHARE
    return raw


def postgres_connector(source: PostgresSource) -> Callable[[], Any]:
    """The connection factory of a PostgreSQL source: connecting within connect_timeout_seconds,
    every transaction read-only and every statement cut at statement_timeout_seconds. Its errors
    never quote the connection string: libpq echoes a malformed one (password included)."""
    env = source.dsn_env
    dsn = os.environ.get(env)
    if not dsn:
        raise SourceError(f"postgres source: environment variable {env} is not set")

    def connect() -> Any:
        try:
            connection = psycopg.connect(dsn, connect_timeout=source.connect_timeout_seconds,
                                         cursor_factory=_cursor_class(source.statement_timeout_seconds))
        except psycopg.ProgrammingError:  # the connection string itself does not parse
            raise SourceError(f"postgres source: ${env} is not a valid connection string") from None
        except psycopg.Error as exc:
            message = " ".join(str(exc).replace(dsn, f"${env}").split())
            raise SourceError(f"postgres source: cannot connect with ${env}: {message}") from None
        _read_only(connection, source.statement_timeout_seconds)
        return connection

    return connect


def _read_only(connection: psycopg.Connection[Any], timeout_seconds: float) -> None:
    """Session settings, not options in the DSN (which would replace the user's own options):
    a query can neither write nor run for ever. SET cannot appear inside the query's subselect."""
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.execute(f"SET statement_timeout = {max(1, round(timeout_seconds * 1000))}")
    connection.commit()


class _SourceCursor(psycopg.Cursor[Any]):
    """The cursor Ray Data's read_sql gets: a refused write or a timed-out query is told as what
    it is, in one line, instead of as a bare driver error inside Ray's task error."""

    timeout_seconds: float = 0.0  # set by _cursor_class, for the message

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        try:
            return super().execute(query, params, **kwargs)
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise SourceError(
                "postgres source: the query tried to write; sources are read in a read-only transaction"
                f" ({_first_line(exc)})") from None
        except psycopg.errors.QueryCanceled as exc:
            raise SourceError(
                f"postgres source: the query ran longer than statement_timeout_seconds"
                f" ({self.timeout_seconds:g}s) and was cancelled ({_first_line(exc)})") from None


def _cursor_class(timeout_seconds: float) -> type[_SourceCursor]:
    return type("SourceCursor", (_SourceCursor,), {"timeout_seconds": timeout_seconds})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _read_postgres(source: PostgresSource, schema: SchemaSpec) -> ray.data.Dataset:
    connect = postgres_connector(source)

    # row_number() gives every row its ordinal so quarantine can point at it.
    sql = f"SELECT row_number() OVER () AS _source_row, q.* FROM ({source.query}) AS q"
    # One query, read by one task (nothing to shard on); its rows are then cut into blocks of
    # ROWS_PER_BLOCK. Left to itself, Ray Data split the result into 200 blocks whatever its size:
    # 200 tasks for every later step, and dozens of worker processes started for 40 rows.
    dataset = ray.data.read_sql(sql, connect, num_cpus=TASK_CPUS, override_num_blocks=1)

    def annotate(table: pa.Table) -> pa.Table:
        missing = missing_required_columns(table.column_names, schema)
        if missing:
            raise SourceError(f"postgres source: the query returns no column(s) {missing}")
        numbers = table.column("_source_row").to_pylist()
        table = table.append_column("_source", pa.array(["postgres"] * table.num_rows, pa.string()))
        table = table.append_column(
            "_source_order", pa.array([f"postgres\x1f{n:015d}" for n in numbers], pa.string())
        )
        return table.append_column("_parse_error", pa.nulls(table.num_rows, pa.string()))

    annotated = dataset.map_batches(annotate, batch_format="pyarrow", batch_size=None, **task_args())
    return in_blocks_of(annotated, ROWS_PER_BLOCK)


def source_fingerprint(source: SourceSpec, paths: StoragePaths) -> dict[str, Any] | None:
    """What a resumed run checks its input against: each file's path, size and modification time,
    or the catalogued version read; None for a query or a stream (not fingerprinted)."""
    if isinstance(source, DatasetSource):
        return {"dataset": source.name, "version": source.resolved_version}
    if not isinstance(source, FileSource):
        return None
    fs, path = paths.filesystem(source.path)
    info = fs.get_file_info(path)
    infos = (
        fs.get_file_info(pafs.FileSelector(path, recursive=True)) if info.type == pafs.FileType.Directory else [info]
    )
    return {"files": sorted([i.path, i.size, i.mtime_ns] for i in infos if i.type == pafs.FileType.File)}
