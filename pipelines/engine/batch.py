"""The Ray Data plan of a batch run (runs and imports).

validate -> (quarantine duplicate keys) -> split -> augment chain -> write Parquet.
The validated records are materialized once so that the quarantine and the augmented output
are written from the same rows and the counts can be reconciled.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray

from augment_core.logs import configure_logging
from augment_core.storage import StoragePaths
from augment_core.tracing import flush as flush_spans
from pipelines.augmenters.base import Augmenter
from pipelines.augmenters.inference_base import InferenceAugmenter
from pipelines.augmenters.registry import build_chain
from pipelines.engine import kernels
from pipelines.engine.chain import (
    FailureReporter,
    Reporter,
    mark_duplicates,
    no_failures,
    no_report,
    output_schema,
    run_chain,
    setup_chain,
    split_valid,
)
from pipelines.engine.validation import validate_table
from pipelines.inference.context import RunContext
from pipelines.io.parquet import (
    count_parquet_rows,
    parquet_files,
    remove_folder,
    write_empty_parquet,
)
from pipelines.io.resources import TASK_CPUS, cluster_cpus, in_blocks_of, spread_over_nodes, task_args, write_args
from pipelines.io.sinks import QUARANTINE_SCHEMA, quarantine_rows
from pipelines.io.sources import read_source
from pipelines.spec.workflow import WorkflowSpec


def quiet_ray_data() -> None:
    """Progress lives in the run row, not in bars and INFO lines (nor in a warning that they are off),
    and a failure in the run's one-line reason and error log, not as Ray Data's tracebacks on the
    console of whoever started the run. Ray Data's session log (ray-data.log) still has it all."""
    data_log = logging.getLogger("ray.data")
    data_log.setLevel(logging.WARNING)
    for handler in data_log.handlers:
        if handler.get_name() == "console":  # the handler of Ray Data's default logging config
            handler.setLevel(logging.CRITICAL)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


def augment_batches(spec: WorkflowSpec, report: Reporter, context: RunContext) -> type:
    """The Ray Data actor class that runs the chain of a workflow that calls providers. The spec
    and the run's context travel inside the class rather than as constructor arguments, so a
    restarted actor never depends on objects in the object store (ray-project/ray#53727). A
    reporter with a `record_failed` method (actors' CoordinatorReporter) also hears of the records
    a step left in error."""
    report_failed: FailureReporter = getattr(report, "record_failed", no_failures)

    class AugmentBatches:
        def __init__(self) -> None:
            configure_logging(context.settings.log_format if context.settings else None)
            self.chain = setup_chain(build_chain(spec), context)  # reference tables load once per actor
            self.schema = output_schema(spec)

        def __call__(self, table: pa.Table) -> pa.Table:
            try:
                return run_chain(self.chain, table, self.schema, report, report_failed, context)
            finally:
                flush_spans()  # an actor of the pool can be killed without its exit hooks

    return AugmentBatches


# The chains that Ray Data tasks of this worker process have set up, by plan: a worker runs many
# tasks of a run, and sets its chain up (reference tables, parsers) at the first. A few plans:
# two runs at once share the job's workers.
_TASK_CHAINS: OrderedDict[str, tuple[list[Augmenter], pa.Schema]] = OrderedDict()
_TASK_CHAINS_KEPT = 4


def augment_in_tasks(spec: WorkflowSpec, report: Reporter, context: RunContext, plan_id: str) -> Callable[
        [pa.Table], pa.Table]:
    """The function that Ray Data tasks run the chain with, for a workflow that calls no provider.

    Tasks, not an actor pool: a run's tasks go to the job's worker processes, which the read and
    validation have already started (each new process imports Ray Data, pandas and the engine:
    about 1.5 s of CPU), and the write fuses into the same task. An actor pool starts processes of
    its own for every run. Workflows that call providers keep their actors: a pool of clients and
    one batch in flight an actor, for the limiter's sake."""
    report_failed: FailureReporter = getattr(report, "record_failed", no_failures)

    def augment(table: pa.Table) -> pa.Table:
        found = _TASK_CHAINS.get(plan_id)
        if found is None:
            configure_logging(context.settings.log_format if context.settings else None)
            found = _TASK_CHAINS[plan_id] = (setup_chain(build_chain(spec), context), output_schema(spec))
            while len(_TASK_CHAINS) > _TASK_CHAINS_KEPT:
                _TASK_CHAINS.popitem(last=False)
        chain, schema = found
        try:
            return run_chain(chain, table, schema, report, report_failed, context)
        finally:
            flush_spans()

    return augment


@dataclass
class PlanResult:
    """What a plan (or a stream consumer) wrote: counted from the files, not from the plan."""

    rows_in: int
    valid: int
    quarantined: int
    output_path: str
    quarantine_path: str
    schema: pa.Schema


class BatchPlan:
    """The stages of one run, called in order by the run coordinator."""

    def __init__(
        self, spec: WorkflowSpec, paths: StoragePaths, run_id: str, report: Reporter = no_report,
        context: RunContext | None = None, resume: bool = False, output_path: str | None = None,
    ) -> None:
        self.spec, self.paths, self.run_id, self.report = spec, paths, run_id, report
        self.resume = resume  # carry on from what an earlier attempt of this run wrote
        self.context = context or RunContext(providers=spec.providers, run_id=run_id)
        # The run's folder, or another one its coordinator chose (never a catalogued version's).
        self.output_path = output_path or paths.dataset_run(spec.sink.dataset, run_id)
        self.quarantine_path = paths.quarantine(spec.sink.dataset, run_id)
        self.validated: ray.data.Dataset | None = None
        self.rows_of: Callable[[pa.Table, bool], pa.Table] = split_valid  # a validated block's valid or invalid rows
        self.plan_id = uuid.uuid4().hex  # what this plan's tasks know their chain by
        self.rows_in = 0

    def check_chain(self) -> None:
        """Set the chain up once here, so a bad reference table fails the run in seconds,
        before any record is read, instead of inside every Ray Data actor."""
        setup_chain(build_chain(self.spec), self.context)

    def validate(self) -> int:
        """Read and validate every record; returns the number read."""
        schema, report = self.spec.schema_, self.report

        def validate_batch(table: pa.Table) -> pa.Table:
            started = time.perf_counter()
            out = validate_table(table, schema)
            report("validate", out.num_rows, time.perf_counter() - started)
            return out

        raw = read_source(self.spec.source, schema, self.paths)
        validated = raw.map_batches(
            validate_batch, batch_format="pyarrow", batch_size=None, **task_args()).materialize()
        self.rows_in = validated.count()  # free on a materialized dataset
        if schema.key and schema.unique_key:
            first_seen = self._first_seen_of_duplicates(validated)
            if first_seen:  # later copies of a key are invalid: marked by the tasks that split the rows
                self.rows_of = functools.partial(marked_rows_of, first_seen=first_seen, key=schema.key)
        self.validated = validated
        return self.rows_in

    def _first_seen_of_duplicates(self, validated: ray.data.Dataset) -> dict[str, str]:
        """record_uuid -> `_source_order` of its first occurrence, for the ids seen more than once.

        Without a shuffle: each block sends this process a 64-bit hash of each valid row's id (8
        bytes a record, not the records), and only the rows whose hash repeats send their id and
        order in a second pass, where ids are compared exactly (so a hash collision changes nothing).
        Memory here is bounded by the hashes and the duplicates."""
        hashes = [batch["hash"] for batch in validated.map_batches(
            id_hashes, batch_format="pyarrow", batch_size=None, **task_args(),
        ).iter_batches(batch_format="numpy", batch_size=None)]
        if not hashes:
            return {}
        values, counts = np.unique(np.concatenate(hashes), return_counts=True)
        repeated = values[counts > 1]
        if not len(repeated):
            return {}
        orders: dict[str, list[str]] = {}
        for row in validated.map_batches(
            lambda t: rows_with_hashes(t, repeated), batch_format="pyarrow", batch_size=None, **task_args(),
        ).iter_rows():
            orders.setdefault(row["record_uuid"], []).append(row["_source_order"])
        return {record_id: min(seen) for record_id, seen in orders.items() if len(seen) > 1}

    def write(self) -> PlanResult:
        """Write the quarantine and the augmented records; count both from what was written.

        Exactly once: every whole output file holds finished records, and a resumed run augments
        and writes only the valid records that no whole file holds yet."""
        assert self.validated is not None, "validate() first"
        run_id = self.run_id
        schema = output_schema(self.spec)
        q_fs, q_path = self.paths.filesystem(self.quarantine_path)
        if self.resume:  # the quarantine is cheap and deterministic: written again, whole
            remove_folder(q_fs, q_path)
        rows_of = self.rows_of
        quarantine = self.validated.map_batches(
            lambda t: quarantine_rows(rows_of(t, False), run_id), batch_format="pyarrow", batch_size=None,
            **task_args(at_most=1),
        )
        # Written beside the augmented records, one task at a time, not before them: its tasks are
        # light, and on their own they left a core idle (3 s of a 1 M-row run on 2 cores).
        with ThreadPoolExecutor(1, thread_name_prefix="quarantine") as beside:
            quarantine_written = beside.submit(
                quarantine.write_parquet, q_path, filesystem=q_fs, **write_args(at_most=1))
            o_fs, o_path = self._write_augmented()
            quarantine_written.result()
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

    def _write_augmented(self) -> tuple[pafs.FileSystem, str]:
        """Augment the valid records (on a resume: those no whole output file holds) and write
        them; returns the output's filesystem and path."""
        assert self.validated is not None
        o_fs, o_path = self.paths.filesystem(self.output_path)
        rows_of = self.rows_of

        def valid(table: pa.Table) -> pa.Table:
            return rows_of(table, True)

        # Validated blocks, whose valid rows the augment pass takes itself, or (on a resume) the
        # valid records still to do.
        to_augment: ray.data.Dataset = self.validated
        take: TableStep | None = valid
        if self.resume:
            to_augment = to_augment.map_batches(valid, batch_format="pyarrow", batch_size=None, **task_args())
            take = None
            if self._ids_are_unique():
                to_augment = self._not_yet_written(to_augment, o_fs, o_path)
            else:  # records may share an id: which copies were written is unknowable, so all are
                remove_folder(o_fs, o_path)  # written again (their answered calls are cached)
        batch_rows = augment_batch_rows(self.spec)
        # Workflows that call providers run the chain in an actor pool: as many actors as there are
        # batches, up to one per CPU, spread over the cluster's nodes (losing a node loses only its
        # share of the batches in flight, not the whole pool's).
        actors = min(cluster_cpus(), -(-max(1, self.rows_in) // batch_rows)) if calls_provider(self.spec) else 0
        with spread_over_nodes(actors) as placement:
            augmented = self._augmented(to_augment, take, batch_rows, actors, placement)
            # A file holds at most one augment call's records: what a crash can make a resume redo.
            augmented.write_parquet(o_path, filesystem=o_fs, max_rows_per_file=batch_rows, **write_args())
        return o_fs, o_path

    def _augmented(self, records: ray.data.Dataset, valid: TableStep | None, batch_rows: int, actors: int,
                   placement: dict[str, Any]) -> ray.data.Dataset:
        """The records (their `valid` rows, given that) through the chain: in a pool of `actors`
        actors (placed by `placement`) when the workflow calls providers, in tasks when it does not
        (`actors` 0)."""
        if actors:
            if valid is not None:
                records = records.map_batches(valid, batch_format="pyarrow", batch_size=None, **task_args())
            # Blocks of one batch each, so that the batches spread over the actor pool instead of
            # a whole block going through one actor a batch after the other.
            return in_blocks_of(records, batch_rows).map_batches(
                augment_batches(self.spec, self.report, self.context),
                batch_format="pyarrow",
                # What a crash costs a run is the batches in flight (their answered calls are cached).
                batch_size=batch_rows,
                # A fixed pool, one batch at a time an actor: a batch waits for a free actor rather
                # than behind another batch on a busy one. With one task in flight an actor is never
                # more than 100 % used, so Ray Data's autoscaler (which grows a pool past 175 %) never would.
                compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                num_cpus=TASK_CPUS, **placement,
            )
        # The blocks of the read (one a CPU up to 192 MiB each: see block_bytes) spread over the
        # tasks as they are, one block a batch: cut again (a shuffle's worth of CPU) only the blocks
        # of any size that a resume's join leaves.
        batches = in_blocks_of(records, batch_rows) if self.resume else records
        augment = augment_in_tasks(self.spec, self.report, self.context, self.plan_id)
        if valid is not None:
            # Taken in the augmenting task itself: as a map_batches of its own, Ray Data ran it in
            # tasks of their own (it fuses no two map_batches that both have a concurrency cap),
            # every block's valid rows going through the object store.
            augment = compose(valid, augment)
        return batches.map_batches(
            augment, batch_format="pyarrow", batch_size=None if batches is records else batch_rows, **task_args())

    def _ids_are_unique(self) -> bool:
        """Valid records have distinct record_uuids only when a key is declared unique (later
        duplicates are quarantined); keyless ids of identical rows, or a non-unique key, repeat."""
        schema = self.spec.schema_
        return bool(schema.key) and schema.unique_key

    def _not_yet_written(self, valid: ray.data.Dataset, fs: pafs.FileSystem, path: str) -> ray.data.Dataset:
        """The valid records that no whole output file holds. A file the crash cut short is
        removed first (its records are done again, from the result cache). The ids are compared
        by a distributed anti-join, so no process ever holds every id (nor every done id)."""
        files = parquet_files(fs, path)  # listed once: a file is either whole (done) or deleted
        for broken in [f for f, rows in files.items() if rows is None]:
            fs.delete_file(broken)
        done = [f for f, rows in files.items() if rows]
        if not done:
            return valid
        written = ray.data.read_parquet(done, filesystem=fs, columns=["record_uuid"], **task_args())
        return valid.join(
            written, join_type="left_anti", on=("record_uuid",),
            num_partitions=min(64, 1 + self.rows_in // 100_000),  # ~100k records held by each aggregator
            # Fractional, like the augment actors: a whole CPU each hangs a busy 2-CPU node.
            aggregator_ray_remote_args={"num_cpus": 0.1},
        )


# Records per output file (and per augment call on a resume; otherwise a call takes a read block
# whole) for a workflow that calls no provider, unless its sink sets batch_rows: a crash then makes
# a resume redo no paid calls, and each batch's fixed costs (a task, a file, the parsers' per-batch
# caches) are spread wider. At the 256 rows that suit paid calls, a run of the sample workflow over
# 200 k records did 0.24x the in-process engine's rows/s.
UNPAID_BATCH_ROWS = 10_000


def augment_batch_rows(spec: WorkflowSpec) -> int:
    """The sink's batch_rows, or UNPAID_BATCH_ROWS when it leaves them unset and no step calls a provider."""
    if "batch_rows" in spec.sink.model_fields_set or calls_provider(spec):
        return spec.sink.batch_rows
    return UNPAID_BATCH_ROWS


def calls_provider(spec: WorkflowSpec) -> bool:
    """Whether a step of the workflow calls a provider (an llm, http or embed step that is not local)."""
    return any(isinstance(step, InferenceAugmenter) and step.calls_provider for step in build_chain(spec))


def marked_rows_of(table: pa.Table, valid: bool, first_seen: dict[str, str], key: list[str]) -> pa.Table:
    """`split_valid` of a validated block whose later copies of a unique key are first marked
    invalid (`mark_duplicates`)."""
    return split_valid(mark_duplicates(table, first_seen, key), valid)


TableStep = Callable[[pa.Table], pa.Table]


def compose(first: TableStep, then: TableStep) -> TableStep:
    """`then(first(table))`, named after both (Ray Data names its operator after it)."""
    def both(table: pa.Table) -> pa.Table:
        return then(first(table))
    both.__name__ = f"{first.__name__}_then_{then.__name__}"
    return both


def id_hashes(table: pa.Table) -> pa.Table:
    """A 64-bit hash of each valid row's record_uuid."""
    return pa.table({"hash": pa.array(kernels.id_hashes(split_valid(table, True)["record_uuid"]), pa.uint64())})


def rows_with_hashes(table: pa.Table, hashes: np.ndarray) -> pa.Table:
    """The id and input position of the valid rows whose id hashes to one of `hashes`."""
    valid = split_valid(table, True).select(["record_uuid", "_source_order"])
    return valid.filter(pa.array(np.isin(kernels.id_hashes(valid["record_uuid"]), hashes)))
