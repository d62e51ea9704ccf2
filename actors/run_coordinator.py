"""RunCoordinator: one named actor per run that drives its steps and records every transition.

It is what `augment status` and the API read while a run is live. It beats a heartbeat into the
metadata store; when the driver dies the actor dies with it, the beats stop, and the cluster's
reaper fails the run (actors/reaper.py). Once the run has ended (reaped, cancelled) the store
refuses its writes (RunEnded): the coordinator stops, and catalogues nothing.

Its output becomes a dataset version last: the version is reserved (pending), the CSV export and
the review items are written, and the final write publishes the version with the run's success.

The class is plain Python (unit tests drive it in-process); `RunCoordinatorActor` is the actor.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from typing import Any

import ray
from pydantic import SecretStr
from ray.actor import ActorHandle

from actors.coordinator_handles import (
    CoordinatorBudget,
    CoordinatorGate,
    CoordinatorReporter,
    CoordinatorSecrets,
)
from actors.provider_limiter import cluster_permits
from actors.run_metrics import record_finished_run
from augment_core.errors import describe_error
from augment_core.events import BackgroundPublisher, open_bus
from augment_core.logs import configure_logging, register_secret_names
from augment_core.logs import set_run as set_log_run
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import FINAL_STATUSES, RunEnded, StepState, durably, open_store, utcnow
from augment_core.tracing import RunTrace
from pipelines.engine.batch import BatchPlan, quiet_ray_data
from pipelines.engine.outputs import (
    Outcomes,
    check_reconciled,
    count_outcomes,
    failed_too_many,
    reserve_output,
    reserved_version,
)
from pipelines.inference.budget import CostLedger
from pipelines.inference.context import RunContext
from pipelines.io.dataset_source import resolve_dataset_source
from pipelines.io.parquet import complete_parquet_rows
from pipelines.io.sources import source_fingerprint
from pipelines.review.decisions import DecisionLookup
from pipelines.review.enqueue import enqueue as enqueue_review
from pipelines.spec.workflow import WorkflowSpec

PROGRESS_SECONDS = 1.0  # step.progress at most this often, and only when the counts changed
MAX_FAILED_EVENTS = 10_000  # record.failed events of one run; more are counted in run.finished
EVENTS_FLUSH_SECONDS = 10.0  # how long the end of a run waits for its events to be published
log = logging.getLogger(__name__)


class RunCoordinator:
    """Drives one run: its plan's stages, its steps' states, its budget, events and heartbeat."""

    def __init__(
        self, settings: Settings, run_id: str, spec: WorkflowSpec, secrets: dict[str, SecretStr] | None = None,
        resume: bool = False, traceparent: str | None = None,
    ) -> None:
        configure_logging(settings.log_format)
        set_log_run(run_id)
        register_secret_names(secrets or {})
        # The run's span, child of whoever started the run (`traceparent`), and its steps' spans.
        self.trace = RunTrace(run_id, spec.name, spec.version, traceparent)
        # Source credentials the driver had (e.g. a DSN variable) for this process's readers.
        self.secrets = dict(secrets or {})
        for name, value in self.secrets.items():
            os.environ[name] = value.get_secret_value()
        self.settings = settings
        self.run_id = run_id
        self.spec = spec
        self.store = open_store(settings)
        self.steps = {name: StepState(name=name) for name in spec.run_step_names()}
        self.status = "pending"
        self.resume = resume  # carry on from the output already written (see BatchPlan.write)
        max_usd = spec.budget.max_usd if spec.budget else None
        self.ledger = CostLedger.carried_on(max_usd, self.store.get_run(run_id).cost) if resume else CostLedger(max_usd)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.events = BackgroundPublisher(open_bus(settings), run_id)
        self._finished_sent = False
        self._failed_events = 0  # record.failed reported by workers, sent or not
        self._progress_sent: list[tuple[str, str, int]] = []
        self.output_path = StoragePaths(settings).dataset_run(spec.sink.dataset, run_id)  # see _output_folder

    # read by status/API while live ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"status": self.status, "steps": [s.model_dump() for s in self.steps.values()]}

    def report(self, step: str, rows: int, seconds: float = 0.0) -> None:
        with self._lock:
            if step in self.steps:
                self.steps[step].rows += rows
                self.steps[step].seconds += seconds

    def record_failed(self, step: str, failures: list[dict[str, str]]) -> None:
        """Records a worker's batch left in error at `step`: one record.failed event each, up to
        MAX_FAILED_EVENTS a run (a provider outage must not flood the bus and this actor's memory);
        past that they are counted, and run.finished says how many had no event of their own."""
        with self._lock:
            room = max(0, MAX_FAILED_EVENTS - self._failed_events)
            self._failed_events += len(failures)
        for failure in failures[:room]:
            self.events.send("record.failed", {"record_uuid": failure["record_uuid"], "step": step,
                                               "reason": failure["reason"]})

    # the run's provider spending, from every worker -------------------------------------------
    def reserve(self, usd: float) -> bool:
        return self.ledger.reserve(usd)

    def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        self.ledger.settle(step, reserved, usage)

    def cost(self) -> dict[str, Any]:
        return self.ledger.summary()

    def cancel(self, reason: str) -> str:
        """End the run as 'cancelled' now, keeping what it wrote and reporting it; the caller then
        kills this actor, which stops the run's Ray Data work with it. Returns the stored status
        ('cancelled', or the final status it had already reached)."""
        now = utcnow().isoformat()
        with self._lock:
            for state in self.steps.values():
                if state.state in ("pending", "running"):
                    state.state, state.finished_at = "cancelled", now
                    state.error = reason if state.started_at else None
            steps = [s.model_dump() for s in self.steps.values()]
            read = self.steps["validate"].rows
        paths = StoragePaths(self.settings)
        output_path = self.output_path
        try:
            written: int | None = complete_parquet_rows(*paths.filesystem(output_path))
        except OSError as exc:  # storage unreachable: the cancel goes on, without the count
            log.warning("rows written by run %s not counted: %s", self.run_id, exc)
            written = None
        counts = {"in": read, "valid": 0, "quarantined": 0, "augmented": 0, "failed": 0, "skipped": 0}
        output = {"dataset": self.spec.sink.dataset, "path": output_path, "partial": True, "rows_written": written}
        self._stop.set()  # no heartbeat may follow the final write
        if self.store.finish_run(self.run_id, "cancelled", error=reason, steps=steps, counts=counts,
                                 output=output, cost=self.ledger.summary()):
            status = "cancelled"
        else:
            status = self.store.get_run(self.run_id).status
        with self._lock:
            self.status = status
        self._announce_finished(status, counts, reason)
        return status

    def stopped(self) -> str | None:
        """Why workers must send no more provider calls (the run has ended), or None."""
        with self._lock:
            return f"run {self.status}" if self.status in FINAL_STATUSES else None

    def secret(self, name: str) -> str | None:
        """A key the driver had, for this run's workers (only the ones the run's spec names)."""
        value = self.secrets.get(name)
        return value.get_secret_value() if value is not None else None

    # driving -----------------------------------------------------------------------------------
    def execute(self) -> str:
        """Run every step; returns the final status, as stored. Never leaves the run 'running'."""
        quiet_ray_data()
        if not self.store.mark_running(self.run_id):  # ended before it started: do nothing
            with self._lock:
                self.status = self.store.get_run(self.run_id).status
            return self.status
        with self._lock:
            self.status = "running"
        self.events.send("run.started", {"workflow": self.spec.name, "version": self.spec.version,
                                         "steps": list(self.steps), "resume": self.resume})
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        progress = threading.Thread(target=self._progress, name="progress", daemon=True)
        beat.start()
        progress.start()
        try:
            status, fields = self._drive()
        finally:
            # No beat may land after the final write: it would put back running steps.
            self._stop.set()
            beat.join()
            progress.join()
        self._end(status, **fields)
        return self.status

    def _drive(self) -> tuple[str, dict[str, Any]]:
        """The steps in order: (final status, fields of the run row to store with it)."""
        current = "setup"
        try:
            me = self._self()
            source_version = resolve_dataset_source(self.spec, self.store)  # 'latest' pinned once
            context = RunContext(
                providers=self.spec.providers, settings=self.settings, run_id=self.run_id,
                permits_for=cluster_permits, budget=CoordinatorBudget(me, self.spec.budget is not None),
                secrets=CoordinatorSecrets(me), gate=CoordinatorGate(me),
                decisions=DecisionLookup(self.settings, self.spec.name),
                trace=self.trace.parents,  # filled in as steps start; workers get it when write() begins
            )
            self.output_path = self._output_folder()
            plan = BatchPlan(self.spec, StoragePaths(self.settings), self.run_id, CoordinatorReporter(me), context,
                             resume=self.resume, output_path=self.output_path)
            plan.check_chain()
            self._check_input()
            current = "validate"
            self._start("validate")
            rows_in = plan.validate()
            self._finish("validate")
            current = "write"
            for name in [*self.spec.step_names(), "write"]:
                self._start(name)
            # A catalogued version is never overwritten (_output_folder chose a folder that holds
            # none); an earlier attempt's own pending version is this run's to write on.
            self.store.refuse_catalogued(plan.output_path, run_id=self.run_id)
            result = plan.write()
            for name in self.spec.step_names():
                self._finish(name)
            check_reconciled(result.rows_in, result.valid, result.quarantined)
            outcomes = count_outcomes(self.spec, StoragePaths(self.settings), result.output_path)
            failed, skipped = outcomes.failed, outcomes.skipped
            counts = {
                "in": rows_in, "valid": result.valid, "quarantined": result.quarantined,
                "augmented": result.valid - failed - skipped, "failed": failed, "skipped": skipped,
            }
            self._record_outcomes(outcomes)
            too_many = failed_too_many(self.spec, result.valid, outcomes)
            if too_many is not None:  # an honest outcome: not catalogued, the files kept to look at
                self._fail_running(too_many)
                output = {"dataset": self.spec.sink.dataset, "path": result.output_path,
                          "quarantine_path": result.quarantine_path, "partial": True, "rows_written": result.valid}
                return "failed", {"error": too_many, "counts": counts, "output": output, "cost": self.ledger.summary()}
            # Catalogued last: reserved here, the export and review items written, published by _end.
            output = reserve_output(self.settings, self.spec, self.run_id, result)
            output["review_items"] = enqueue_review(self.settings, self.spec, self.run_id, output)
            if source_version is not None:
                output["source"] = {"dataset": source_version.dataset, "version": source_version.version}
            self.report("write", result.valid + result.quarantined)
            self._finish("write")
            return "succeeded", {"counts": counts, "output": output, "cost": self.ledger.summary()}
        except Exception as exc:  # every failure ends the run with its reason
            error = f"step {current!r} failed: {describe_error(exc)}"
            self._write_error_log(error, exc)
            self._fail_running(error)
            return "failed", {"error": error, "cost": self.ledger.summary()}

    def _write_error_log(self, error: str, exc: BaseException) -> None:
        """The whole story behind the one-line reason, Ray's wrapping included, where the run's
        owner can read it (`augment run` names the file) instead of on everybody's stderr."""
        paths = StoragePaths(self.settings)
        path = paths.run_log(self.run_id)
        text = f"run {self.run_id} failed at {utcnow().isoformat()}\n{error}\n\n" + "".join(
            traceback.format_exception(exc))
        try:
            fs, local = paths.filesystem(path)
            fs.create_dir(local.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(local) as out:
                out.write(text.encode("utf-8", "backslashreplace"))
        except OSError as log_error:  # the reason is in the run row all the same
            log.warning("error log of run %s not written: %s", self.run_id, log_error)

    def _fail_running(self, error: str) -> None:
        with self._lock:
            for state in self.steps.values():
                if state.state == "running":
                    state.state, state.error, state.finished_at = "failed", error, utcnow().isoformat()

    def _record_outcomes(self, outcomes: Outcomes) -> None:
        """Each step's records in error and skipped, in its state: 'succeeded with 3 failed'."""
        with self._lock:
            for name, (failed, skipped) in outcomes.steps.items():
                if name in self.steps:
                    self.steps[name].failed, self.steps[name].skipped = failed, skipped

    def _check_input(self) -> None:
        """Record the input's fingerprint; a resumed run refuses an input that changed since, as
        its done records would no longer match what it reads."""
        source = self.spec.source
        fingerprint = source_fingerprint(source, StoragePaths(self.settings))
        if not self.resume:
            self.store.update_run(self.run_id, input=fingerprint)
            return
        before = self.store.get_run(self.run_id).input
        if before is not None and before != fingerprint:
            raise RuntimeError(
                "the input changed since this run started (files, sizes or times; or the dataset version):"
                " its records done so far would not match it; start a new run (augment run --fresh)"
            )

    def _output_folder(self) -> str:
        """The folder this attempt writes: the run's own, unless a catalogued version holds it
        (a run catalogued before versions were published with its success, then lost): a resume
        never deletes nor rewrites a catalogued version's files, so it writes the next folder of
        the run that holds none, carrying on in it if an earlier resume began it."""
        paths, dataset = StoragePaths(self.settings), self.spec.sink.dataset
        folder, attempt = paths.dataset_run(dataset, self.run_id), 0
        while self.resume and self.store.catalogued_version(folder) is not None:
            attempt += 1
            folder = paths.dataset_run(dataset, f"{self.run_id}-resume{attempt}")
        return folder

    def _self(self) -> ActorHandle:
        return ray.get_runtime_context().current_actor

    def _start(self, name: str) -> None:
        self.trace.start_step(name)
        with self._lock:
            self.steps[name].state, self.steps[name].started_at = "running", utcnow().isoformat()

    def _finish(self, name: str) -> None:
        self.trace.finish_step(name)
        with self._lock:
            self.steps[name].state, self.steps[name].finished_at = "succeeded", utcnow().isoformat()

    def _end(self, status: str, **fields: Any) -> None:
        with self._lock:
            steps = [s.model_dump() for s in self.steps.values()]
        output = fields.get("output") or {}
        publish = reserved_version(output) if status == "succeeded" and "version" in output else None
        # Waits out a database restart (for less than the stale-run window: the reaper does not
        # take the wait for a lost driver); a run whose final write is lost is reaped later.
        what, window = f"final state of run {self.run_id}", self.settings.durable_write_window
        if not durably(lambda: self.store.finish_run(self.run_id, status, steps=steps, publish=publish, **fields),
                       what, window):
            # Reaped or stopped meanwhile (or this write's reply was lost): the stored status stands.
            stored = durably(lambda: self.store.get_run(self.run_id).status, what, window)
            if publish is not None and stored != "succeeded":  # ended meanwhile: its version stays unpublished
                durably(lambda: self.store.withdraw_review_items(self.run_id), what, window)  # and its items go
            status = stored
        with self._lock:
            self.status = status
        self._announce_finished(status, fields.get("counts"), fields.get("error"))

    def _announce_finished(self, status: str, counts: dict[str, int] | None, error: str | None) -> None:
        """run.finished, once, with the stored outcome (a reaped or stopped run's stands), and
        wait a bounded time for this run's events to go out before the actor can be killed."""
        with self._lock:
            if self._finished_sent:
                return
            self._finished_sent = True
        duration: float | None = None
        try:
            record = self.store.get_run(self.run_id)
            status, counts, error = record.status, record.counts, record.error
            duration = record.duration_seconds
        except Exception as exc:  # the store is down: what this actor knows
            log.warning("run.finished of run %s sent without the stored outcome: %s", self.run_id, exc)
        self._send_progress()  # the steps' last state, before the end
        with self._lock:
            steps = [s.model_dump() for s in self.steps.values()]
        self.trace.end(status, counts, error, steps)
        record_finished_run(self.spec.name, status, counts or {}, steps, duration)
        if (failed := (counts or {}).get("failed")) or status == "failed":
            # Once per run, for whoever reads the cluster's logs: records failing is what operators look for.
            at_steps = ", ".join(f"{s['name']} {s['failed']}" for s in steps if s.get("failed"))
            log.warning("run %s of %s ended %s; %s of %s records failed at a step%s", self.run_id, self.spec.name,
                        status, failed or 0, (counts or {}).get("valid", 0), f" ({at_steps})" if at_steps else "")
        finished: dict[str, Any] = {"status": status, "counts": counts or {}, "error": error}
        if self._failed_events > MAX_FAILED_EVENTS:
            finished["record_failed_without_event"] = self._failed_events - MAX_FAILED_EVENTS
        if not self.events.flush(EVENTS_FLUSH_SECONDS):  # a backlog: run.finished must not wait behind it
            log.warning("events of run %s not all published within %gs", self.run_id, EVENTS_FLUSH_SECONDS)
            self.events.bus.publish(self.run_id, "run.finished", finished)
            return
        self.events.send("run.finished", finished)
        self.events.flush(EVENTS_FLUSH_SECONDS)

    def _progress(self) -> None:
        while not self._stop.wait(PROGRESS_SECONDS):
            self._send_progress()

    def _send_progress(self) -> None:
        """step.progress with every step's state and rows, when they changed since the last one."""
        with self._lock:
            now = [(s.name, s.state, s.rows) for s in self.steps.values()]
            if now == self._progress_sent:
                return
            self._progress_sent = now
        self.events.send("step.progress", {"steps": {n: {"state": st, "rows": r} for n, st, r in now}})

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            with self._lock:
                steps = [s.model_dump() for s in self.steps.values()]
            try:
                # The cost too: a run whose driver dies keeps what it spent, and resume goes on from it.
                self.store.update_run(self.run_id, heartbeat_at=utcnow(), steps=steps, cost=self.ledger.summary())
            except RunEnded as ended:  # reaped or cancelled meanwhile: stop, and let workers stop
                self._lost(ended)
                return
            except Exception as exc:  # a missed beat is retried on the next tick
                log.warning("heartbeat of run %s not stored: %s", self.run_id, exc)

    def _lost(self, ended: RunEnded) -> None:
        """The run ended under this coordinator (its beats went stale, e.g. through a long database
        outage, and the reaper failed it): workers send no more provider calls (see `stopped`), and
        the run's end finds the stored outcome standing."""
        log.warning("%s; run %s stops", ended, self.run_id)
        with self._lock:
            self.status = ended.status


# The actor: every method above, called with `.remote()`. Threads, not asyncio: `execute` blocks on
# Ray Data while workers call `reserve`, `settle`, `report` and `stopped` concurrently.
RunCoordinatorActor = ray.remote(  # type: ignore[call-overload]  # Ray's overloads omit max_concurrency
    num_cpus=0, max_concurrency=8)(RunCoordinator)
