"""Pieces of the batch plan that need no Ray: empty outputs stay readable datasets."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import pipelines.io.parquet as parquet_module
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


def test_the_csv_export_escapes_cells_a_spreadsheet_would_run_and_parquet_keeps_them(tmp_path: Path) -> None:
    cells = ["=HYPERLINK(\"http://evil\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", None, ""]
    table = pa.table({"text": cells, "n": [-5, 1, 2, 3, 4, 5, 6, 7, 8, 9]})
    folder = tmp_path / "datasets" / "d" / "run-1"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    paths = StoragePaths(Settings(storage_root=str(tmp_path), database_url="sqlite:///:memory:"))

    escaped, exact = tmp_path / "escaped.csv", tmp_path / "exact.csv"
    export_csv(paths, str(folder), str(escaped))
    export_csv(paths, str(folder), str(exact), escape_formulas=False)
    read = pa_csv.read_csv(escaped, convert_options=pa_csv.ConvertOptions(column_types={"text": pa.string()}))
    assert read["text"].to_pylist() == [
        "'=HYPERLINK(\"http://evil\")", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b", "", "",
    ]
    assert read["n"].to_pylist()[0] == -5  # a number is not text: left alone
    raw = pa_csv.read_csv(exact, convert_options=pa_csv.ConvertOptions(column_types={"text": pa.string()}))
    assert raw["text"].to_pylist()[:6] == cells[:6]
    assert pq.read_table(folder)["text"].to_pylist() == cells  # the dataset itself keeps every value exact


def test_a_csv_export_cut_short_leaves_no_partial_file_and_the_previous_export_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "datasets" / "d" / "run-1"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"record_uuid": ["a", "b"], "n": [1, 2]}), folder / "part-0.parquet")
    paths = StoragePaths(Settings(storage_root=str(tmp_path), database_url="sqlite:///:memory:"))
    csv_path = tmp_path / "exports" / "d" / "v1.csv"
    export_csv(paths, str(folder), str(csv_path))
    whole = csv_path.read_text(encoding="utf-8")
    assert whole.count("\n") == 3

    def crash(batch: pa.RecordBatch) -> pa.RecordBatch:
        raise OSError("disk full")

    monkeypatch.setattr(parquet_module, "formulas_escaped", crash)
    with pytest.raises(OSError, match="disk full"):
        export_csv(paths, str(folder), str(csv_path))
    assert csv_path.read_text(encoding="utf-8") == whole  # what readers had stays whole
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["v1.csv"]  # and nothing half-written beside it


def test_first_rows_reads_only_what_it_shows_and_skips_a_file_cut_short(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    pq.write_table(pa.table({"n": list(range(0, 5))}), folder / "a.parquet")
    pq.write_table(pa.table({"n": list(range(5, 10))}), folder / "b.parquet")
    (folder / "c.parquet").write_bytes(b"PAR1 cut short")  # a write still going on
    fs = pafs.LocalFileSystem()
    assert [r["n"] for r in parquet_module.first_rows(fs, str(folder), 7)] == [0, 1, 2, 3, 4, 5, 6]
    assert len(parquet_module.first_rows(fs, str(folder), 50)) == 10
    assert parquet_module.first_rows(fs, str(tmp_path / "none"), 5) == []
