"""The Ray Data plan of a batch run, and the batch functions it shares with the online path.

validate -> (quarantine duplicate keys) -> split -> augment chain -> write Parquet.
The validated records are materialized once so that the quarantine and the augmented output
are written from the same rows and the counts can be reconciled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
from ray.data.aggregate import Count, Min

from augment_core.storage import StoragePaths
from pipelines.augmenters.base import Augmenter
from pipelines.inference.context import RunContext
from pipelines.registry import build_chain, output_schema
from pipelines.sources import read_source
from pipelines.spec import WorkflowSpec
from pipelines.validation import ERRORS_COLUMN, RAW_COLUMN, validate_table

Reporter = Callable[[str, int], None]
FailureReporter = Callable[[str, list[dict[str, str]]], None]  # (step, [{record_uuid, reason}, ...])

QUARANTINE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("source_row", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("errors", pa.string()),
        ("record", pa.string()),
    ]
)


class ActorReporter:
    """Sends step progress to the run coordinator without waiting (fire and forget)."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def __call__(self, step: str, rows: int) -> None:
        self.coordinator.report.remote(step, rows)

    def record_failed(self, step: str, failures: list[dict[str, str]]) -> None:
        """The records a step left in error, one call per batch and step (all of them, uncapped)."""
        self.coordinator.record_failed.remote(step, failures)


def _no_report(step: str, rows: int) -> None:
    return None


def _no_failures(step: str, failures: list[dict[str, str]]) -> None:
    return None


def failures_of(augmenter: Augmenter, table: pa.Table) -> list[dict[str, str]]:
    """{record_uuid, reason} of each record the step left in status 'error' (none for steps
    that cannot fail per record)."""
    status = augmenter.status_column()
    if status is None or status not in table.column_names or "record_uuid" not in table.column_names:
        return []
    failed = table.filter(pc.fill_null(pc.equal(table[status], "error"), False))
    if not failed.num_rows:
        return []
    error = status.removesuffix("_status") + "_error"
    reasons = failed[error].to_pylist() if error in failed.column_names else [None] * failed.num_rows
    return [{"record_uuid": uuid, "reason": reason or "no reason given"}
            for uuid, reason in zip(failed["record_uuid"].to_pylist(), reasons)]


def quiet_ray_data() -> None:
    """Progress lives in the run row, not in bars and INFO lines (nor in a warning that they are off)."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


# Batch functions shared by both paths ------------------------------------------------------
def split_valid(table: pa.Table, valid: bool) -> pa.Table:
    mask = pc.is_null(table[ERRORS_COLUMN])
    return table.filter(mask if valid else pc.invert(mask))


class StepError(Exception):
    """An augmenter that raised: a bug or a configuration error, never a bad record."""

    def __init__(self, augmenter: Augmenter, stage: str, exc: Exception) -> None:
        super().__init__(f"step {augmenter.step_name!r} ({augmenter.name}) {stage}: {type(exc).__name__}: {exc}")


def setup_chain(chain: list[Augmenter], context: RunContext | None = None) -> list[Augmenter]:
    for augmenter in chain:
        try:
            if context is not None:
                augmenter.bind(context)
                augmenter.decisions = context.decisions()
            augmenter.setup()
        except Exception as exc:
            raise StepError(augmenter, "setup failed", exc) from exc
    return chain


def run_chain(
    chain: list[Augmenter], table: pa.Table, schema: pa.Schema, report: Reporter = _no_report,
    report_failed: FailureReporter = _no_failures,
) -> pa.Table:
    """Valid records through every augmenter, returned with exactly the output schema."""
    for augmenter in chain:
        try:
            table = augmenter.apply(table)
        except Exception as exc:
            raise StepError(augmenter, "failed", exc) from exc
        report(augmenter.step_name, table.num_rows)
        if report_failed is not _no_failures and (failures := failures_of(augmenter, table)):
            report_failed(augmenter.step_name, failures)
    return table.select(schema.names).cast(schema)


def mark_duplicates(table: pa.Table, first_seen: dict[str, str], key: list[str]) -> pa.Table:
    """Quarantine every record whose key was already seen earlier in the input."""
    ids = table["record_uuid"].to_pylist()
    orders = table["_source_order"].to_pylist()
    later = [i for i, (record_id, order) in enumerate(zip(ids, orders))
             if record_id is not None and first_seen.get(record_id, order) != order]
    if not later:
        return table
    errors = table[ERRORS_COLUMN].to_pylist()
    raws = table[RAW_COLUMN].to_pylist()
    for i in later:
        row = table.slice(i, 1).to_pylist()[0]
        source, first_row = first_seen[ids[i]].split("\x1f")
        values = {k: row[k] for k in key}
        errors[i] = json.dumps(
            [{"field": ",".join(key), "reason": f"duplicate key {values}: first seen at row {int(first_row)} of {source}"}],
            ensure_ascii=False,
            default=str,
        )
        raws[i] = json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, ensure_ascii=False, default=str)
    table = table.set_column(table.column_names.index(ERRORS_COLUMN), ERRORS_COLUMN, pa.array(errors, pa.string()))
    return table.set_column(table.column_names.index(RAW_COLUMN), RAW_COLUMN, pa.array(raws, pa.string()))


def quarantine_rows(table: pa.Table, run_id: str) -> pa.Table:
    """Invalid records in the quarantine layout: where, which field, why, and the raw values."""
    errors = [json.loads(e) for e in table[ERRORS_COLUMN].to_pylist()]
    n = table.num_rows
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "source": table["_source"] if "_source" in table.column_names else pa.nulls(n, pa.string()),
            "source_row": table["_source_row"] if "_source_row" in table.column_names else pa.nulls(n, pa.int64()),
            "field": pa.array([e[0]["field"] for e in errors], pa.string()),
            "reason": pa.array(["; ".join(f"{x['field']}: {x['reason']}" for x in e) for e in errors], pa.string()),
            "errors": table[ERRORS_COLUMN],
            "record": table[RAW_COLUMN],
        },
        schema=QUARANTINE_SCHEMA,
    )


# The batch plan ---------------------------------------------------------------------------
def augment_batches(spec: WorkflowSpec, report: Reporter, context: RunContext) -> type:
    """The Ray Data actor class that runs the chain. The spec and the run's context travel
    inside the class rather than as constructor arguments, so a restarted actor never depends
    on objects in the object store (ray-project/ray#53727). A reporter with a `record_failed`
    method (ActorReporter) also hears of the records a step left in error."""
    report_failed: FailureReporter = getattr(report, "record_failed", _no_failures)

    class AugmentBatches:
        def __init__(self) -> None:
            self.chain = setup_chain(build_chain(spec), context)  # reference tables load once per actor
            self.schema = output_schema(spec)

        def __call__(self, table: pa.Table) -> pa.Table:
            return run_chain(self.chain, table, self.schema, report, report_failed)

    return AugmentBatches


@dataclass
class PlanResult:
    rows_in: int
    valid: int
    quarantined: int
    output_path: str
    quarantine_path: str
    schema: pa.Schema


class BatchPlan:
    """The stages of one run, called in order by the run coordinator."""

    def __init__(
        self, spec: WorkflowSpec, paths: StoragePaths, run_id: str, report: Reporter = _no_report,
        context: RunContext | None = None, resume: bool = False,
    ) -> None:
        self.spec, self.paths, self.run_id, self.report = spec, paths, run_id, report
        self.resume = resume  # carry on from what an earlier attempt of this run wrote
        self.context = context or RunContext(providers=spec.providers, run_id=run_id)
        self.output_path = paths.dataset_run(spec.sink.dataset, run_id)
        self.quarantine_path = paths.quarantine(spec.sink.dataset, run_id)
        self.validated: ray.data.Dataset | None = None
        self.rows_in = 0

    def check_chain(self) -> None:
        """Set the chain up once here, so a bad reference table fails the run in seconds,
        before any record is read, instead of inside every Ray Data actor."""
        setup_chain(build_chain(self.spec), self.context)

    def validate(self) -> int:
        """Read and validate every record; returns the number read."""
        schema, report = self.spec.schema_, self.report

        def validate_batch(table: pa.Table) -> pa.Table:
            out = validate_table(table, schema)
            report("validate", out.num_rows)
            return out

        source_fs = None
        if getattr(self.spec.source, "path", "").startswith("s3://"):
            source_fs = self.paths.filesystem(self.spec.source.path)[0]
        raw = read_source(self.spec.source, schema, filesystem=source_fs)
        validated = raw.map_batches(validate_batch, batch_format="pyarrow", batch_size=None).materialize()
        self.rows_in = validated.count()  # free on a materialized dataset
        if schema.key and schema.unique_key:
            first_seen = self._first_seen_of_duplicates(validated)
            if first_seen:
                validated = validated.map_batches(
                    mark_duplicates, batch_format="pyarrow", batch_size=None,
                    fn_kwargs={"first_seen": first_seen, "key": schema.key},
                )
        self.validated = validated
        return self.rows_in

    def _first_seen_of_duplicates(self, validated: ray.data.Dataset) -> dict[str, str]:
        # Only keys seen more than once come back to this process: memory stays bounded by them.
        counts = (
            validated.map_batches(lambda t: split_valid(t, True).select(["record_uuid", "_source_order"]),
                                  batch_format="pyarrow", batch_size=None)
            .groupby("record_uuid", num_partitions=max(1, min(validated.num_blocks(), 64)))
            .aggregate(Count(alias_name="seen"), Min("_source_order", alias_name="first"))
            .filter(expr="seen > 1")
        )
        return {row["record_uuid"]: row["first"] for row in counts.iter_rows()}

    def write(self) -> PlanResult:
        """Write the quarantine, then the augmented records; count both from what was written.

        Exactly once: every whole output file holds finished records, and a resumed run augments
        and writes only the valid records that no whole file holds yet."""
        assert self.validated is not None, "validate() first"
        run_id = self.run_id
        schema = output_schema(self.spec)
        q_fs, q_path = self.paths.filesystem(self.quarantine_path)
        if self.resume:  # the quarantine is cheap and deterministic: written again, whole
            _remove_folder(q_fs, q_path)
        (
            self.validated.map_batches(
                lambda t: quarantine_rows(split_valid(t, False), run_id), batch_format="pyarrow", batch_size=None
            ).write_parquet(q_path, filesystem=q_fs)
        )
        o_fs, o_path = self.paths.filesystem(self.output_path)
        valid = self.validated.map_batches(lambda t: split_valid(t, True), batch_format="pyarrow", batch_size=None)
        if self.resume and self._ids_are_unique():
            valid = self._not_yet_written(valid, o_fs, o_path)
        elif self.resume:  # records may share an id: which copies were written is unknowable, so
            _remove_folder(o_fs, o_path)  # all are written again (their answered calls are cached)
        pool, batch_rows = _cluster_cpus(), self.spec.sink.batch_rows
        (
            # Blocks of one batch each, so that the batches spread over the actor pool instead of
            # a whole block going through one actor a batch after the other.
            valid.repartition(target_num_rows_per_block=batch_rows)
            .map_batches(
                augment_batches(self.spec, self.report, self.context),
                batch_format="pyarrow",
                # What a crash costs a run is the batches in flight (their answered calls are cached).
                batch_size=batch_rows,
                # One batch at a time per actor: queued batches start more actors rather than
                # wait behind one (an actor runs its batches one after the other).
                compute=ray.data.ActorPoolStrategy(
                    min_size=1, max_size=pool, initial_size=min(pool, -(-max(1, self.rows_in) // batch_rows)),
                    max_tasks_in_flight_per_actor=1),
                num_cpus=0.25,
            )
            # A file holds at most one augment call's records: what a crash can make a resume redo.
            .write_parquet(o_path, filesystem=o_fs, max_rows_per_file=batch_rows)
        )
        valid, quarantined = count_parquet_rows(o_fs, o_path), count_parquet_rows(q_fs, q_path)
        # Ray Data writes no file for no rows: leave an empty one so that both paths exist and
        # carry their schema (a catalogued version must be readable; its CSV export has a header).
        if valid == 0:
            write_empty_parquet(o_fs, o_path, schema)
        if quarantined == 0:
            write_empty_parquet(q_fs, q_path, QUARANTINE_SCHEMA)
        return PlanResult(
            rows_in=self.rows_in,
            valid=valid,
            quarantined=quarantined,
            output_path=self.output_path,
            quarantine_path=self.quarantine_path,
            schema=schema,
        )


    def _ids_are_unique(self) -> bool:
        """Valid records have distinct record_uuids only when a key is declared unique (later
        duplicates are quarantined); keyless ids of identical rows, or a non-unique key, repeat."""
        schema = self.spec.schema_
        return bool(schema.key) and schema.unique_key

    def _not_yet_written(self, valid: ray.data.Dataset, fs: Any, path: str) -> ray.data.Dataset:
        """The valid records that no whole output file holds. A file the crash cut short is
        removed first (its records are done again, from the result cache). The ids are compared
        by a distributed anti-join, so no process ever holds every id (nor every done id)."""
        files = parquet_files(fs, path)  # listed once: a file is either whole (done) or deleted
        for broken in [f for f, rows in files.items() if rows is None]:
            fs.delete_file(broken)
        done = [f for f, rows in files.items() if rows]
        if not done:
            return valid
        written = ray.data.read_parquet(done, filesystem=fs, columns=["record_uuid"])
        return valid.join(
            written, join_type="left_anti", on=("record_uuid",),
            num_partitions=min(64, 1 + self.rows_in // 100_000),  # ~100k records held by each aggregator
            # Fractional, like the augment actors: a whole CPU each hangs a busy 2-CPU node.
            aggregator_ray_remote_args={"num_cpus": 0.1},
        )


def _cluster_cpus() -> int:
    """Upper bound of the augment actor pool: one actor per CPU the cluster has."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def count_parquet_rows(fs: Any, path: str) -> int:
    """Rows in a written Parquet folder, from file footers (0 when nothing was written)."""
    from pyarrow.fs import FileSelector, FileType

    info = fs.get_file_info(path)
    if info.type == FileType.NotFound:
        return 0
    files = [f.path for f in fs.get_file_info(FileSelector(path, recursive=True)) if f.path.endswith(".parquet")]
    return sum(pq.ParquetFile(fs.open_input_file(f)).metadata.num_rows for f in files)


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
        skipped += pc.sum(pc.and_(pc.fill_null(skip, False), pc.invert(pc.fill_null(error, False))).cast(pa.int64())).as_py() or 0
    return failed, skipped


def parquet_files(fs: Any, path: str) -> dict[str, int | None]:
    """Every Parquet file of a folder with its row count; None for a file that is not whole
    (a write cut short has no footer)."""
    from pyarrow.fs import FileSelector, FileType

    if fs.get_file_info(path).type == FileType.NotFound:
        return {}
    files: dict[str, int | None] = {}
    for info in fs.get_file_info(FileSelector(path, recursive=True)):
        if info.path.endswith(".parquet"):
            try:
                files[info.path] = pq.ParquetFile(fs.open_input_file(info.path)).metadata.num_rows
            except pa.ArrowInvalid:  # no footer; an OSError (storage unreachable) is not a verdict
                files[info.path] = None
    return files


def whole_parquet_files(fs: Any, path: str) -> dict[str, int]:
    return {f: rows for f, rows in parquet_files(fs, path).items() if rows is not None}


def complete_parquet_rows(fs: Any, path: str) -> int:
    """Rows in the Parquet files of a folder that are whole."""
    return sum(whole_parquet_files(fs, path).values())


def _remove_folder(fs: Any, path: str) -> None:
    from pyarrow.fs import FileType

    if fs.get_file_info(path).type != FileType.NotFound:
        fs.delete_dir(path)


def write_empty_parquet(fs: Any, path: str, schema: pa.Schema) -> None:
    """A Parquet folder holding one file with the schema and no rows."""
    fs.create_dir(path, recursive=True)
    pq.write_table(schema.empty_table(), f"{path}/empty.parquet", filesystem=fs)


def export_csv(paths: StoragePaths, parquet_path: str, csv_path: str) -> None:
    """Stream a written dataset into one CSV file (bounded memory)."""
    in_fs, in_path = paths.filesystem(parquet_path)
    out_fs, out_path = paths.filesystem(csv_path)
    out_fs.create_dir(out_path.rsplit("/", 1)[0], recursive=True)
    dataset = pq.ParquetDataset(in_path, filesystem=in_fs)
    schema = dataset.schema
    with out_fs.open_output_stream(out_path) as stream, pacsv.CSVWriter(stream, schema) as writer:
        for fragment in dataset.fragments:
            for batch in fragment.to_batches():
                writer.write_batch(batch)
