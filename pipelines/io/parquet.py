"""Parquet folders on local or object storage: rows counted from footers, whole and cut-short files,
empty versions, CSV exports."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augment_core.storage import StoragePaths


def count_parquet_rows(fs: pafs.FileSystem, path: str) -> int:
    """Rows in a written Parquet folder, from file footers (0 when nothing was written)."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return 0
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.path.endswith(".parquet")]
    return sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files)


def parquet_files(fs: pafs.FileSystem, path: str) -> dict[str, int | None]:
    """Every Parquet file of a folder with its row count; None for a file that is not whole
    (a write cut short has no footer)."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return {}
    files: dict[str, int | None] = {}
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.path.endswith(".parquet"):
            try:
                files[info.path] = pq.ParquetFile(fs.open_input_file(info.path)).metadata.num_rows
            except pa.ArrowInvalid:  # no footer; an OSError (storage unreachable) is not a verdict
                files[info.path] = None
    return files


def whole_parquet_files(fs: pafs.FileSystem, path: str) -> dict[str, int]:
    return {f: rows for f, rows in parquet_files(fs, path).items() if rows is not None}


def complete_parquet_rows(fs: pafs.FileSystem, path: str) -> int:
    """Rows in the Parquet files of a folder that are whole."""
    return sum(whole_parquet_files(fs, path).values())


def first_rows(fs: pafs.FileSystem, path: str, limit: int) -> list[dict[str, object]]:
    """Up to `limit` rows of a Parquet folder's whole files (files in name order), read batch by
    batch: a glance at a large folder costs only what it shows."""
    rows: list[dict[str, object]] = []
    for file in sorted(whole_parquet_files(fs, path)):
        for batch in pq.ParquetFile(fs.open_input_file(file)).iter_batches(batch_size=max(1, min(limit, 1024))):
            rows += batch.slice(0, limit - len(rows)).to_pylist()
            if len(rows) >= limit:
                return rows
    return rows


def remove_folder(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def write_empty_parquet(fs: pafs.FileSystem, path: str, schema: pa.Schema) -> None:
    """A Parquet folder holding one file with the schema and no rows."""
    fs.create_dir(path, recursive=True)
    pq.write_table(schema.empty_table(), f"{path}/empty.parquet", filesystem=fs)


def export_csv(paths: StoragePaths, parquet_path: str, csv_path: str, escape_formulas: bool = True) -> None:
    """Stream a written dataset into one CSV file (bounded memory). With `escape_formulas`, a text
    cell a spreadsheet would run as a formula is written with a leading ' (see formulas_escaped)."""
    in_fs, in_path = paths.filesystem(parquet_path)
    out_fs, out_path = paths.filesystem(csv_path)
    out_fs.create_dir(out_path.rsplit("/", 1)[0], recursive=True)
    dataset = pq.ParquetDataset(in_path, filesystem=in_fs)
    schema = dataset.schema
    # Written beside it, then renamed: a reader (or a crash) never meets half an export. An
    # object store shows an object only once its upload completed: there it is written in place.
    in_place = out_fs.type_name == "s3"
    partial = out_path if in_place else f"{out_path}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with out_fs.open_output_stream(partial) as stream, pacsv.CSVWriter(stream, schema) as writer:
            for fragment in dataset.fragments:
                for batch in fragment.to_batches():
                    writer.write_batch(formulas_escaped(batch) if escape_formulas else batch)
        if not in_place:
            out_fs.move(partial, out_path)
    except BaseException:
        if not in_place:
            _delete_quietly(out_fs, partial)
        raise


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:  # never written, or storage unreachable: the original error matters
        pass


# What a spreadsheet takes for the start of a formula (OWASP, CSV injection).
FORMULA_START = r"^[=+\-@\t\r]"


def formulas_escaped(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with every text cell that starts like a formula prefixed with ', so that a
    spreadsheet shows the text instead of running it. Numbers are left alone: -5 is a number."""
    columns = []
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.fill_null(pc.match_substring_regex(column, FORMULA_START), False)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
