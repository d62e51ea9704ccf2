"""Pieces of the batch plan that need no Ray: empty outputs stay readable datasets."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from pipelines.io.parquet import count_parquet_rows, export_csv, write_empty_parquet
from pipelines.io.sinks import QUARANTINE_SCHEMA


def test_an_empty_output_keeps_its_schema_and_exports_a_header(tmp_path: Path) -> None:
    fs = pafs.LocalFileSystem()
    schema = pa.schema([("record_uuid", pa.string()), ("n", pa.int64())])
    folder = str(tmp_path / "datasets" / "d" / "run-1")
    assert count_parquet_rows(fs, folder) == 0
    write_empty_parquet(fs, folder, schema)
    assert count_parquet_rows(fs, folder) == 0
    assert pq.read_table(folder).schema == schema

    paths = StoragePaths(Settings(storage_root=str(tmp_path), database_url="sqlite:///:memory:"))
    csv_path = str(tmp_path / "exports" / "d" / "v1.csv")
    export_csv(paths, folder, csv_path)
    assert Path(csv_path).read_text(encoding="utf-8") == '"record_uuid","n"\n'


def test_an_empty_quarantine_is_a_readable_parquet_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "quarantine" / "d" / "run-1")
    write_empty_parquet(pafs.LocalFileSystem(), folder, QUARANTINE_SCHEMA)
    table = pq.read_table(folder)
    assert table.num_rows == 0 and table.schema == QUARANTINE_SCHEMA
