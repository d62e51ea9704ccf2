"""What a run wrote: its outcomes counted, its counts reconciled, its folder catalogued as a version.

Shared by batch runs, imports and stream consumers."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import durably, open_store
from pipelines.augmenters.registry import build_chain
from pipelines.engine.batch import PlanResult
from pipelines.io.parquet import export_csv
from pipelines.spec.workflow import WorkflowSpec


def count_outcomes(spec: WorkflowSpec, paths: StoragePaths, parquet_path: str) -> tuple[int, int]:
    """(failed, skipped) records of a written dataset, from the inference steps' status columns:
    a record with any step in error is failed; one with a step skipped (budget) and none in
    error is skipped. Reads those columns only, file by file."""
    columns = [c for c in (augmenter.status_column() for augmenter in build_chain(spec)) if c]
    if not columns:
        return 0, 0
    fs, path = paths.filesystem(parquet_path)
    failed = skipped = 0
    for fragment in pq.ParquetDataset(path, filesystem=fs).fragments:
        table = fragment.to_table(columns=columns)
        if not table.num_rows:
            continue
        error = pc.equal(table[columns[0]], "error")
        skip = pc.equal(table[columns[0]], "skipped")
        for name in columns[1:]:
            error = pc.or_(error, pc.equal(table[name], "error"))
            skip = pc.or_(skip, pc.equal(table[name], "skipped"))
        failed += pc.sum(pc.fill_null(error, False).cast(pa.int64())).as_py() or 0
        skipped += (
            pc.sum(pc.and_(pc.fill_null(skip, False), pc.invert(pc.fill_null(error, False))).cast(pa.int64())).as_py()
            or 0
        )
    return failed, skipped


def check_reconciled(rows_in: int, valid: int, quarantined: int, written: tuple[int, int] | None = None) -> None:
    """Fail unless in = valid + quarantined (and, given `written`, the files hold exactly that
    many valid and quarantined records): a record lost or written twice fails the run."""
    files_differ = written is not None and written != (valid, quarantined)
    if rows_in != valid + quarantined or files_differ:
        held = f", but the files hold {written[0]} valid and {written[1]}" if written and files_differ else ""
        raise RuntimeError(f"counts do not reconcile: in={rows_in}, valid={valid}, quarantined={quarantined}{held}")


def catalog_output(settings: Settings, spec: WorkflowSpec, run_id: str, result: PlanResult) -> dict[str, Any]:
    """Give a run's written data a dataset version, waiting out a database restart; the run's
    `output`. Shared by batch runs and stream consumers."""
    store, sink = open_store(settings), spec.sink
    columns = {field.name: str(field.type) for field in result.schema}
    entry = durably(lambda: store.add_next_dataset_version(
        sink.dataset, result.output_path, columns, result.valid, run_id), f"catalog of run {run_id}")
    version = entry.version
    output: dict[str, Any] = {
        "dataset": sink.dataset, "version": version, "path": result.output_path,
        "quarantine_path": result.quarantine_path,
    }
    if sink.export_csv:
        paths = StoragePaths(settings)
        output["csv_path"] = paths.export_csv(sink.dataset, version)
        export_csv(paths, result.output_path, output["csv_path"])
    return output
