"""What a run wrote: its outcomes counted, its counts reconciled, its folder reserved as a version
(published by the run's final write).

Shared by batch runs, imports and stream consumers."""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Outcomes(NamedTuple):
    """How the records of a written dataset fared at the steps that can fail per record."""

    failed: int  # records with any step in error
    skipped: int  # records with a step skipped (budget, an empty input) and none in error
    steps: dict[str, tuple[int, int]]  # step -> (records in error, records skipped) there


def count_outcomes(spec: WorkflowSpec, paths: StoragePaths, parquet_path: str) -> Outcomes:
    """The outcomes of a written dataset, from the steps' status columns, read file by file."""
    status = {a.step_name: c for a in build_chain(spec) if (c := a.status_column())}
    if not status:
        return Outcomes(0, 0, {})
    fs, path = paths.filesystem(parquet_path)
    failed = skipped = 0
    steps = {name: (0, 0) for name in status}
    for fragment in pq.ParquetDataset(path, filesystem=fs).fragments:
        table = fragment.to_table(columns=list(status.values()))
        if not table.num_rows:
            continue
        any_error = any_skip = pa.array([False] * table.num_rows)
        for name, column in status.items():
            error = pc.fill_null(pc.equal(table[column], "error"), False)
            skip = pc.fill_null(pc.equal(table[column], "skipped"), False)
            steps[name] = (steps[name][0] + _true(error), steps[name][1] + _true(skip))
            any_error, any_skip = pc.or_(any_error, error), pc.or_(any_skip, skip)
        failed += _true(any_error)
        skipped += _true(pc.and_(any_skip, pc.invert(any_error)))
    return Outcomes(failed, skipped, steps)


def _true(mask: pa.Array) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def failed_too_many(spec: WorkflowSpec, valid: int, outcomes: Outcomes) -> str | None:
    """Why a run whose records failed at its steps did not succeed, or None: more failed than the
    workflow's max_failed_share allows (by default: every record failed)."""
    if not valid or not outcomes.failed:
        return None
    share = outcomes.failed / valid
    limit = spec.max_failed_share
    if (share <= limit) if limit is not None else (outcomes.failed < valid):
        return None
    worst = ", ".join(f"{name} {errors}" for name, (errors, _) in outcomes.steps.items() if errors)
    allowed = f"max_failed_share is {limit:g}" if limit is not None else "max_failed_share is not set"
    return (f"{outcomes.failed} of {valid} records failed at a step ({share:.0%}; {allowed}):"
            f" records in error by step: {worst}")


def check_reconciled(rows_in: int, valid: int, quarantined: int, written: tuple[int, int] | None = None) -> None:
    """Fail unless in = valid + quarantined (and, given `written`, the files hold exactly that
    many valid and quarantined records): a record lost or written twice fails the run."""
    files_differ = written is not None and written != (valid, quarantined)
    if rows_in != valid + quarantined or files_differ:
        held = f", but the files hold {written[0]} valid and {written[1]}" if written and files_differ else ""
        raise RuntimeError(f"counts do not reconcile: in={rows_in}, valid={valid}, quarantined={quarantined}{held}")


def reserve_output(settings: Settings, spec: WorkflowSpec, run_id: str, result: PlanResult) -> dict[str, Any]:
    """Reserve the next version of the sink's dataset for a run's written data (pending: not yet
    visible), then write its CSV export; the run's `output`. The caller writes the review items
    next and publishes the version last, with the run's success (MetadataStore.finish_run), so
    that no failed or cancelled run owns a catalogued version. Waits out a database restart;
    RunEnded if the run ended meanwhile. Shared by batch runs and stream consumers."""
    store, sink = open_store(settings), spec.sink
    columns = {field.name: str(field.type) for field in result.schema}
    entry = durably(lambda: store.reserve_run_version(
        sink.dataset, result.output_path, columns, result.valid, run_id), f"catalog of run {run_id}",
        settings.durable_write_window)
    version = entry.version
    output: dict[str, Any] = {
        "dataset": sink.dataset, "version": version, "path": result.output_path,
        "quarantine_path": result.quarantine_path,
    }
    if sink.export_csv:
        paths = StoragePaths(settings)
        output["csv_path"] = paths.export_csv(sink.dataset, version)
        export_csv(paths, result.output_path, output["csv_path"], escape_formulas=sink.csv_escape_formulas)
    return output


def reserved_version(output: dict[str, Any]) -> tuple[str, int]:
    """(dataset, version) of an output from reserve_output: what the run's final write publishes."""
    return output["dataset"], int(output["version"])
