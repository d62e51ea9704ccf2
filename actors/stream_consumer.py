"""StreamConsumer: one named, detached actor per workflow whose source is a Redis stream.

It reads micro-batches with XREADGROUP, validates and augments them with the online path's
code (pipelines.engine.inprocess.InProcessEngine), writes valid records to the run's output folder and
invalid ones to its quarantine (pipelines.io.stream_sink), and acknowledges a batch only once both
files are durable. On start it first takes over the messages a dead consumer left pending
(XAUTOCLAIM): those already in the files are acknowledged without being written again.

Its run row shows it: 'running' with counts updated per micro-batch and a heartbeat (a killed
consumer is reaped like a lost driver, and a reaped one's writes are refused); a stop ends it
'succeeded' with its folder catalogued as a dataset version, published by the final write. The
counts describe the folder, which a restart after a crash continues.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa
import ray
import redis
from pydantic import SecretStr

from actors.provider_limiter import cluster_permits
from augment_core.errors import describe_error
from augment_core.events import BackgroundPublisher, open_bus
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import COUNT_NAMES, RunEnded, StepState, durably, open_store, utcnow
from pipelines.engine.batch import PlanResult
from pipelines.engine.inprocess import InProcessEngine
from pipelines.engine.outputs import check_reconciled, count_outcomes, reserve_output, reserved_version
from pipelines.inference.budget import LocalBudget
from pipelines.inference.context import RunContext
from pipelines.io.parquet import count_parquet_rows, write_empty_parquet
from pipelines.io.sinks import QUARANTINE_SCHEMA, quarantine_rows
from pipelines.io.stream_sink import (
    batch_files,
    ids_written_since,
    remove_temp_files,
    schema_of,
    write_batch,
)
from pipelines.io.stream_source import Message, StreamReader, decode
from pipelines.review.decisions import DecisionLookup
from pipelines.spec.workflow import RedisStreamSource, WorkflowSpec

CRASH_POINTS = ("before_write", "between_files", "after_write")
EVENTS_FLUSH_SECONDS = 10.0
log = logging.getLogger(__name__)
T = TypeVar("T")


class CrashHook:
    """Fault tests: end the process (as a SIGKILL would) at `point` of micro-batch `batch`."""

    def __init__(self, point: str, batch: int) -> None:
        assert point in CRASH_POINTS, point
        self.point, self.batch = point, batch

    def __call__(self, point: str, batch: int) -> None:
        if (point, batch) == (self.point, self.batch):
            os._exit(1)


class StreamConsumer:
    """Consumes one workflow's stream as a run (plain Python; StreamConsumerActor is the actor)."""

    def __init__(
        self, settings: Settings, run_id: str, spec: WorkflowSpec, folder_run: str,
        secrets: dict[str, SecretStr] | None = None, crash: CrashHook | None = None,
    ) -> None:
        for name, value in (secrets or {}).items():  # provider keys the starting process had
            os.environ[name] = value.get_secret_value()
        assert isinstance(spec.source, RedisStreamSource) and settings.redis_url
        self.settings, self.run_id, self.spec, self.source = settings, run_id, spec, spec.source
        self.redis_url: str = settings.redis_url
        self.store = open_store(settings)
        self.paths = StoragePaths(settings)
        self.folder_run = folder_run  # the run that opened the folder this one writes on into
        self.output_path = self.paths.dataset_run(spec.sink.dataset, folder_run)
        self.quarantine_path = self.paths.quarantine(spec.sink.dataset, folder_run)
        self.steps = {name: StepState(name=name) for name in spec.run_step_names()}
        self.counts = {name: 0 for name in COUNT_NAMES}
        self.status = "pending"
        self.unacked = 0  # messages written whose acknowledgement has not gone through
        self.budget = LocalBudget(spec.budget.max_usd if spec.budget else None)
        self.events = BackgroundPublisher(open_bus(settings), run_id)
        self.crash = crash or (lambda point, batch: None)
        self.batches = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()

    # control --------------------------------------------------------------------------------------
    def start(self) -> str:
        """Connect, set the augmenters up and take stock of the folder, then consume in the
        background. Returns 'running', or the final status when setup failed (the run says why)."""
        if not self.store.mark_running(self.run_id):
            self.status = self.store.get_run(self.run_id).status
            return self.status
        try:
            self.reader = StreamReader(self.redis_url, self.source, consumer=self.spec.name)
            self.reader.ensure_group()
            context = RunContext(
                providers=self.spec.providers, settings=self.settings, run_id=self.run_id,
                permits_for=cluster_permits, budget=self.budget,
                decisions=DecisionLookup(self.settings, self.spec.name),
            )
            self.workflow = InProcessEngine(self.spec, context)
            self._take_stock()
        except Exception as exc:  # nothing was consumed: the run fails with the reason
            self._end("failed", f"setup failed: {describe_error(exc)}")
            self._done.set()
            return self.status
        with self._lock:
            self.status = "running"
            for state in self.steps.values():
                state.state, state.started_at = "running", utcnow().isoformat()
        self.events.send("run.started", {"workflow": self.spec.name, "version": self.spec.version,
                                         "steps": list(self.steps), "stream": self.source.stream})
        threading.Thread(target=self._consume, name="consume", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        return "running"

    def stop(self, timeout: float) -> str:
        """Finish the micro-batch in hand, catalogue the output and end 'succeeded'; when that
        takes longer than `timeout`, end 'cancelled' with the output kept, not catalogued."""
        self._stop.set()
        if not self._done.wait(timeout):
            self._end("cancelled", f"stopped: the micro-batch in hand did not finish within {timeout:g}s")
        return self.status

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"run_id": self.run_id, "status": self.status, "counts": dict(self.counts),
                    "steps": [s.model_dump() for s in self.steps.values()]}

    # consuming ------------------------------------------------------------------------------------
    def _take_stock(self) -> None:
        """Counts of what the folder already holds (an earlier, crashed run of this stream wrote
        it); a folder written with another output schema cannot be continued."""
        out_fs, out_path = self.paths.filesystem(self.output_path)
        q_fs, q_path = self.paths.filesystem(self.quarantine_path)
        remove_temp_files(out_fs, out_path)
        remove_temp_files(q_fs, q_path)
        expected = self.workflow.schema
        found = schema_of(out_fs, out_path)
        if found is not None and not found.equals(expected):
            raise RuntimeError(
                f"the output folder {self.output_path} of this stream's earlier run was written with another"
                " schema (the spec's schema or steps changed): give the sink another dataset, or restore the spec"
            )
        valid, quarantined = count_parquet_rows(out_fs, out_path), count_parquet_rows(q_fs, q_path)
        outcomes = count_outcomes(self.spec, self.paths, self.output_path) if valid else None
        failed, skipped = (outcomes.failed, outcomes.skipped) if outcomes else (0, 0)
        self.counts.update({"in": valid + quarantined, "valid": valid, "quarantined": quarantined,
                            "augmented": valid - failed - skipped, "failed": failed, "skipped": skipped})

    def _consume(self) -> None:
        status, error = "succeeded", None
        try:
            self._recover()
            while not self._stop.is_set():
                messages = self._retrying(self.reader.read_new, "read")
                if messages:
                    self._handle(messages)
        except redis.RedisError as exc:
            if not self._stop.is_set():  # _retrying gives up only once a stop was asked
                status, error = "failed", f"Redis: {describe_error(exc)}"
        except Exception as exc:  # a step or a write failed: its messages stay pending for a restart
            status, error = "failed", f"micro-batch failed: {describe_error(exc)}"
        try:
            self._finish(status, error)
        finally:
            self._done.set()

    def _recover(self) -> None:
        """Take over the messages delivered before and never acknowledged (a consumer died):
        acknowledge those the files already hold, process the others."""
        oldest = self._retrying(self.reader.oldest_pending, "pending check")
        if oldest is None:
            return
        folders = [self.paths.filesystem(p) for p in (self.output_path, self.quarantine_path)]
        written = set()
        for fs, path in folders:
            written |= ids_written_since(fs, [path], oldest)
        after = "0-0"
        while not self._stop.is_set():
            after, messages = self._retrying(partial(self.reader.claim_pending, after), "claim")
            self._retrying(partial(self.reader.ack, [i for i, _ in messages if i in written]), "ack")
            todo = [m for m in messages if m[0] not in written]
            if todo:
                self._handle(todo)
            if after == "0-0":
                return

    def _handle(self, messages: list[Message]) -> None:
        """One micro-batch: validate, augment, write both files, count, then acknowledge."""
        self.batches += 1
        ids = [message_id for message_id, _ in messages]
        decoded = [decode(fields, self.source) for _, fields in messages]
        origins = [f"{self.source.stream}#{message_id}" for message_id in ids]
        raw = self.workflow.raw_table([d.record for d in decoded], origins, [d.error for d in decoded])
        augmented, invalid = self.workflow.process(raw)
        bad_ids = [origin.rsplit("#", 1)[1] for origin in invalid["_source"].to_pylist()]
        good_ids = [i for i in ids if i not in set(bad_ids)]
        quarantine = _with_message_text(quarantine_rows(invalid, self.run_id), bad_ids,
                                        {i: d.raw for i, d in zip(ids, decoded) if d.error})
        self.crash("before_write", self.batches)
        if quarantine.num_rows:
            write_batch(*self.paths.filesystem(self.quarantine_path), quarantine, bad_ids)
        self.crash("between_files", self.batches)
        failed = skipped = 0
        if augmented.num_rows:
            name = write_batch(*self.paths.filesystem(self.output_path), augmented, good_ids)
            outcomes = count_outcomes(self.spec, self.paths, f"{self.output_path}/{name}")
            failed, skipped = outcomes.failed, outcomes.skipped
        self.crash("after_write", self.batches)
        with self._lock:
            self.unacked += len(ids)
            for key, value in (("in", len(ids)), ("valid", len(good_ids)), ("quarantined", len(bad_ids)),
                               ("augmented", len(good_ids) - failed - skipped), ("failed", failed),
                               ("skipped", skipped)):
                self.counts[key] += value
            self.steps["validate"].rows += len(ids)
            for name in self.spec.step_names():
                self.steps[name].rows += len(good_ids)
            self.steps["write"].rows += len(ids)
        self._save_progress()
        self._retrying(lambda: self.reader.ack(ids), "ack")
        with self._lock:
            self.unacked -= len(ids)

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """A Redis call, retried while Redis is unreachable until a stop is asked."""
        pause = 0.5
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self._stop.is_set():
                    raise
                log.warning("stream %s: %s: Redis unreachable, retrying in %.1fs: %s",
                            self.source.stream, what, pause, exc)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    # the run row ---------------------------------------------------------------------------------
    def _finish(self, status: str, error: str | None) -> None:
        """End the run: catalogue the folder when everything written was acknowledged."""
        with self._lock:
            if self.status != "running":  # a stop that timed out ended it already: no catalogue
                return
        if status == "succeeded" and self.unacked:
            status, error = "cancelled", (
                f"stopped with {self.unacked} written message(s) not acknowledged (Redis unreachable):"
                f" the next start carries on in {self.output_path}"
            )
        output = None
        if status == "succeeded":
            try:
                output = self._catalog()
            except Exception as exc:
                status, error = "failed", f"catalog failed: {describe_error(exc)}"
        self._end(status, error, output)

    def _catalog(self) -> dict[str, Any]:
        """Reconcile the counts with the files, then make the folder a dataset version."""
        out_fs, out_path = self.paths.filesystem(self.output_path)
        q_fs, q_path = self.paths.filesystem(self.quarantine_path)
        valid, quarantined = count_parquet_rows(out_fs, out_path), count_parquet_rows(q_fs, q_path)
        with self._lock:
            counted = (self.counts["in"], self.counts["valid"], self.counts["quarantined"])
        check_reconciled(*counted, written=(valid, quarantined))
        # A version must be readable, with its schema, even when the stream brought no record.
        if not batch_files(out_fs, out_path):
            write_empty_parquet(out_fs, out_path, self.workflow.schema)
        if not batch_files(q_fs, q_path):
            write_empty_parquet(q_fs, q_path, QUARANTINE_SCHEMA)
        result = PlanResult(rows_in=counted[0], valid=valid, quarantined=quarantined, output_path=self.output_path,
                            quarantine_path=self.quarantine_path, schema=self.workflow.schema)
        return reserve_output(self.settings, self.spec, self.run_id, result)  # published by _end

    def _save_progress(self) -> None:
        """Counts, steps and the heartbeat into the run row (a missed one is retried next time)."""
        with self._lock:
            if self.status != "running":
                return
            fields = {"heartbeat_at": utcnow(), "counts": dict(self.counts),
                      "steps": [s.model_dump() for s in self.steps.values()], "cost": self.budget.ledger.summary()}
            steps = {s.name: {"state": s.state, "rows": s.rows} for s in self.steps.values()}
            try:
                self.store.update_run(self.run_id, output=self._stream_output_locked(), **fields)
            except RunEnded as ended:  # reaped meanwhile: its stored outcome stands, nothing more is written
                log.warning("%s; stream run %s stops", ended, self.run_id)
                self.status = ended.status
                self._stop.set()  # the consume loop ends; _finish finds the run ended and catalogues nothing
                return
            except Exception as exc:
                log.warning("progress of stream run %s not stored: %s", self.run_id, exc)
        self.events.send("step.progress", {"steps": steps, "counts": fields["counts"]})

    def _stream_output_locked(self) -> dict[str, Any]:
        """The run's output while it is open: the folder it writes, not (yet) a version."""
        return {"dataset": self.spec.sink.dataset, "path": self.output_path, "quarantine_path": self.quarantine_path,
                "partial": True, "rows_written": self.counts["valid"], "stream": self.source.stream,
                "group": self.source.group, "folder_run": self.folder_run}

    def _heartbeat(self) -> None:
        while not self._done.wait(self.settings.heartbeat_seconds):
            self._save_progress()

    def _end(self, status: str, error: str | None, output: dict[str, Any] | None = None) -> None:
        """The final state, once (a stop that timed out and the loop may both get here)."""
        with self._lock:
            if self.status not in ("pending", "running"):
                return
            for state in self.steps.values():
                if state.state in ("pending", "running"):
                    state.state, state.finished_at = status, utcnow().isoformat()
            counts = dict(self.counts)
            where = {"stream": self.source.stream, "group": self.source.group, "folder_run": self.folder_run}
            fields = {"steps": [s.model_dump() for s in self.steps.values()], "counts": counts,
                      "cost": self.budget.ledger.summary(),
                      "output": output | where if output else self._stream_output_locked()}
            self.status = status
        publish = reserved_version(output) if status == "succeeded" and output else None
        stored = durably(lambda: self.store.finish_run(self.run_id, status, error=error, publish=publish, **fields),
                         f"final state of stream run {self.run_id}", self.settings.durable_write_window)
        if not stored:  # reaped meanwhile: the stored status stands
            with self._lock:
                self.status = self.store.get_run(self.run_id).status
        self.events.send("run.finished", {"status": self.status, "counts": counts, "error": error})
        if not self.events.flush(EVENTS_FLUSH_SECONDS):
            log.warning("events of stream run %s not all published within %gs", self.run_id, EVENTS_FLUSH_SECONDS)


# The actor, detached and named per workflow (actors/streams.py): threads for the consume loop and
# the heartbeat beside the calls (start, stop, snapshot) that reach it.
StreamConsumerActor = ray.remote(  # type: ignore[call-overload]  # Ray's overloads omit max_concurrency
    num_cpus=0, max_concurrency=4)(StreamConsumer)


def _with_message_text(quarantine: pa.Table, ids: list[str], malformed: dict[str, str]) -> pa.Table:
    """A malformed message has no field values: its quarantine row keeps the message itself."""
    if not malformed:
        return quarantine
    records = [malformed.get(i, record) for i, record in zip(ids, quarantine["record"].to_pylist())]
    index = quarantine.column_names.index("record")
    return quarantine.set_column(index, "record", pa.array(records, pa.string()))
