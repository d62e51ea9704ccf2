"""RunCoordinator: one named actor per run that drives its steps and records every transition.

It is what `augment status` and the API read while a run is live. It beats a heartbeat into the
metadata store; when the driver dies the actor dies with it, the beats stop, and readers reap
the run as failed (see MetadataStore.reap_stale_runs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray
from pydantic import SecretStr

from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import FINAL_STATUSES, StepState, VersionTaken, open_store, utcnow
from actors.provider_limiter import cluster_permits
from pipelines.inference.budget import CostLedger
from pipelines.inference.context import RunContext
from pipelines.plan import ActorReporter, BatchPlan, complete_parquet_rows, count_outcomes, export_csv, quiet_ray_data
from pipelines.spec import WorkflowSpec

NAMESPACE = "augment"
VERSION_RETRIES = 5
GATE_TTL_SECONDS = 0.5
log = logging.getLogger(__name__)


def actor_name(run_id: str) -> str:
    return f"run-{run_id}"


class CoordinatorSecrets:
    """RunContext.secrets of a run: workers ask the coordinator for the keys their process lacks."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    def __call__(self, name: str) -> str | None:
        return ray.get(self.coordinator.secret.remote(name), timeout=30)


class CoordinatorBudget:
    """The run's budget, kept by its coordinator so that every worker spends from one ledger."""

    def __init__(self, coordinator: Any, limited: bool) -> None:
        self.coordinator = coordinator
        self.limited = limited

    async def reserve(self, usd: float) -> bool:
        if not self.limited:  # nothing to refuse: spare the round trip
            return True
        return await self.coordinator.reserve.remote(usd)

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        await self.coordinator.settle.remote(step, reserved, usage)


class CoordinatorGate:
    """RunContext.gate of a run: workers stop sending provider calls within GATE_TTL_SECONDS of a
    cancel, without waiting for Ray to reap them after their coordinator is killed."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator
        self._checked = float("-inf")
        self._reason: str | None = None

    async def stopped(self) -> str | None:
        if self._reason is not None or time.monotonic() - self._checked < GATE_TTL_SECONDS:
            return self._reason
        try:
            self._reason = await self.coordinator.stopped.remote()
        except ray.exceptions.RayActorError:
            self._reason = "run stopped: its coordinator is gone"
        self._checked = time.monotonic()
        return self._reason


def describe_error(exc: BaseException) -> str:
    """The error in one line. Ray wraps task and actor errors several times over: name the
    outermost error of ours, else the original error quoted at the end of Ray's own text."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        inner = getattr(current, "cause", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    for candidate in chain:
        text = str(candidate).strip()
        if text and not type(candidate).__module__.startswith("ray."):
            return f"{type(candidate).__name__}: {text.splitlines()[0]}"[:2000]
    for candidate in reversed(chain):
        lines = [line.strip() for line in str(candidate).splitlines() if line.strip()]
        if lines:
            return lines[-1][:2000]
    return type(exc).__name__


@ray.remote(num_cpus=0, max_concurrency=8)
class RunCoordinator:
    def __init__(
        self, settings: Settings, run_id: str, spec: WorkflowSpec, secrets: dict[str, SecretStr] | None = None
    ) -> None:
        # Source credentials the driver had (e.g. a DSN variable) for this process's readers.
        self.secrets = dict(secrets or {})
        for name, value in self.secrets.items():
            os.environ[name] = value.get_secret_value()
        self.settings = settings
        self.run_id = run_id
        self.spec = spec
        self.store = open_store(settings)
        self.steps = {name: StepState(name=name) for name in ["validate", *spec.step_names(), "write"]}
        self.status = "pending"
        self.ledger = CostLedger(spec.budget.max_usd if spec.budget else None)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # read by status/API while live ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"status": self.status, "steps": [s.model_dump() for s in self.steps.values()]}

    def report(self, step: str, rows: int) -> None:
        with self._lock:
            if step in self.steps:
                self.steps[step].rows += rows

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
        output_path = paths.dataset_run(self.spec.sink.dataset, self.run_id)
        written = complete_parquet_rows(*paths.filesystem(output_path))
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
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        try:
            status, fields = self._drive()
        finally:
            # No beat may land after the final write: it would put back running steps.
            self._stop.set()
            beat.join()
        self._end(status, **fields)
        return self.status

    def _drive(self) -> tuple[str, dict[str, Any]]:
        """The steps in order: (final status, fields of the run row to store with it)."""
        current = "setup"
        try:
            me = self._self()
            context = RunContext(
                providers=self.spec.providers, settings=self.settings, run_id=self.run_id,
                permits_for=cluster_permits, budget=CoordinatorBudget(me, self.spec.budget is not None),
                secrets=CoordinatorSecrets(me), gate=CoordinatorGate(me),
            )
            plan = BatchPlan(self.spec, StoragePaths(self.settings), self.run_id, ActorReporter(me), context)
            plan.check_chain()
            current = "validate"
            self._start("validate")
            rows_in = plan.validate()
            self._finish("validate")
            current = "write"
            for name in [*self.spec.step_names(), "write"]:
                self._start(name)
            result = plan.write()
            for name in self.spec.step_names():
                self._finish(name)
            if result.rows_in != result.valid + result.quarantined:
                raise RuntimeError(
                    f"counts do not reconcile: in={result.rows_in}, valid={result.valid}, "
                    f"quarantined={result.quarantined}"
                )
            failed, skipped = count_outcomes(self.spec, StoragePaths(self.settings), result.output_path)
            output = self._catalog(result)
            self.report("write", result.valid + result.quarantined)
            self._finish("write")
            counts = {
                "in": rows_in, "valid": result.valid, "quarantined": result.quarantined,
                "augmented": result.valid - failed - skipped, "failed": failed, "skipped": skipped,
            }
            return "succeeded", {"counts": counts, "output": output, "cost": self.ledger.summary()}
        except Exception as exc:  # every failure ends the run with its reason
            error = f"step {current!r} failed: {describe_error(exc)}"
            with self._lock:
                for state in self.steps.values():
                    if state.state == "running":
                        state.state, state.error, state.finished_at = "failed", error, utcnow().isoformat()
            return "failed", {"error": error, "cost": self.ledger.summary()}

    def _self(self) -> Any:
        return ray.get_runtime_context().current_actor

    def _catalog(self, result: Any) -> dict[str, Any]:
        """Give the written data a dataset version; retry if another run took the number."""
        sink = self.spec.sink
        schema = {field.name: str(field.type) for field in result.schema}
        for _ in range(VERSION_RETRIES):
            version = self.store.next_dataset_version(sink.dataset)
            try:
                self.store.add_dataset_version(sink.dataset, version, result.output_path, schema, result.valid, self.run_id)
                break
            except VersionTaken:
                continue
        else:
            raise RuntimeError(f"could not claim a version of {sink.dataset} after {VERSION_RETRIES} tries")
        output = {
            "dataset": sink.dataset, "version": version, "path": result.output_path,
            "quarantine_path": result.quarantine_path,
        }
        if sink.export_csv:
            paths = StoragePaths(self.settings)
            output["csv_path"] = paths.export_csv(sink.dataset, version)
            export_csv(paths, result.output_path, output["csv_path"])
        return output

    def _start(self, name: str) -> None:
        with self._lock:
            self.steps[name].state, self.steps[name].started_at = "running", utcnow().isoformat()

    def _finish(self, name: str) -> None:
        with self._lock:
            self.steps[name].state, self.steps[name].finished_at = "succeeded", utcnow().isoformat()

    def _end(self, status: str, **fields: Any) -> None:
        with self._lock:
            steps = [s.model_dump() for s in self.steps.values()]
        if not self.store.finish_run(self.run_id, status, steps=steps, **fields):
            status = self.store.get_run(self.run_id).status  # reaped or stopped meanwhile: that stands
        with self._lock:
            self.status = status

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            with self._lock:
                steps = [s.model_dump() for s in self.steps.values()]
            try:
                self.store.update_run(self.run_id, heartbeat_at=utcnow(), steps=steps)
            except Exception as exc:  # a missed beat is retried on the next tick
                log.warning("heartbeat of run %s not stored: %s", self.run_id, exc)
