"""Starting, resuming, cancelling and reading runs: the only place that creates RunCoordinator actors."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any, cast

import ray
from pydantic import SecretStr
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.alert_watcher import ensure_watchers
from actors.naming import NAMESPACE, consumer_name, run_actor_name
from actors.run_coordinator import RunCoordinatorActor
from augment_core.settings import Settings
from augment_core.store import FINAL_STATUSES, RunRecord, StepState, open_store, utcnow
from augment_core.tracing import traceparent
from pipelines.augmenters.registry import build_chain
from pipelines.spec.workflow import WorkflowSpec

# A started run: its coordinator, and the ref of the final status its `execute` returns.
Launched = tuple[ActorHandle, ray.ObjectRef]


def new_run_id() -> str:
    """Sortable by time, unique by a random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def start_run(settings: Settings, spec: WorkflowSpec, spec_path: str,
              run_id: str | None = None) -> tuple[str, Launched]:
    """Create the run row and its named coordinator; returns (run id, ref of the final status).
    `run_id`, when the caller chose it (RUN_ID's form), must not be taken."""
    store = open_store(settings)
    run_id = run_id or new_run_id()
    store.create_run(run_id, spec.name, spec.version, spec_path, spec.run_step_names(), spec=spec_data(spec))
    return run_id, _launch(settings, run_id, spec, resume=False)


def spec_data(spec: WorkflowSpec) -> dict[str, Any]:
    """The spec as stored with its run: what `augment resume` runs again, whatever became of the file."""
    return spec.model_dump(mode="json", by_alias=True)


def _launch(settings: Settings, run_id: str, spec: WorkflowSpec, resume: bool) -> Launched:
    """The run's named coordinator and the ref of its final status; the cluster's reaper, which
    fails the run if its coordinator dies, is started first if it is not there."""
    ensure_watchers(settings)
    try:
        coordinator = RunCoordinatorActor.options(
            name=run_actor_name(run_id), namespace=NAMESPACE, scheduling_strategy=beside_the_caller(),
        ).remote(settings, run_id, spec, run_secrets(spec), resume, traceparent())  # the caller's span, if traced
        return coordinator, coordinator.execute.remote()
    except ValueError as exc:
        if "already taken" in str(exc):  # another driver resumed it a moment ago: that one runs it
            raise ResumeError(f"run {run_id} is already being carried on by another driver") from None
        open_store(settings).finish_run(run_id, "failed", error=f"could not start the run coordinator: {exc}")
        raise
    except Exception as exc:
        open_store(settings).finish_run(run_id, "failed", error=f"could not start the run coordinator: {exc}")
        raise


def beside_the_caller() -> NodeAffinitySchedulingStrategy:
    """On the node of the process that starts the run (the driver, or the API replica that launched
    it). The coordinator dies with that process wherever it runs: on another node it would only add
    a node whose loss fails the run (a lost worker node failed runs whose Ray Data work would have
    carried on; tests/integration/test_two_nodes.py). Not `soft`: Ray then put one coordinator in
    four on another node, and the coordinator asks no resources that its caller's node could lack."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


# How runs end when their driver or coordinator goes away (not by themselves): a re-submitted
# job carries such a run on (see resumable_run).
# Ctrl-C is a decision, not a loss; SIGTERM is what `ray job stop` and schedulers send.
LOST = ("driver lost", "run coordinator lost", "cancelled: driver interrupted (SIGTERM)")


class ResumeError(Exception):
    """A run that cannot be resumed, with the reason."""


def resume_run(settings: Settings, run_id: str) -> tuple[RunRecord, Launched]:
    """Carry on a run that failed or was cancelled: the same run id and output folder, the spec it
    ran with; records already in whole output files are not done again, and provider calls
    already answered come from the result cache. Returns (the run, (coordinator, final ref))."""
    store = open_store(settings)
    record = store.find_run(run_id)
    if record.status in ("pending", "running"):
        if _still_beating(settings, record):
            raise ResumeError(f"run {record.id} is still {record.status} (its coordinator beats): nothing to resume")
        # Its driver died and the beats have not gone stale yet: it is lost all the same.
        store.finish_run(record.id, "failed", error="driver lost: its run coordinator is gone")
        record = store.get_run(record.id)
    refuse_unresumable(record)
    spec = WorkflowSpec.model_validate(record.spec)
    fresh = [StepState(name=name).model_dump() for name in spec.run_step_names()]
    if not store.reopen_run(record.id, fresh):
        raise ResumeError(f"run {record.id} changed meanwhile ({store.get_run(record.id).status}): try again")
    return store.get_run(record.id), _launch(settings, record.id, spec, resume=True)


def refuse_unresumable(record: RunRecord) -> None:
    """ResumeError for a run that no cluster could carry on."""
    if record.status == "succeeded":
        raise ResumeError(f"run {record.id} already succeeded: nothing to resume")
    if not record.spec:
        raise ResumeError(f"run {record.id} was started before runs kept their spec: run the workflow again")


def resumable_run(settings: Settings, spec: WorkflowSpec) -> RunRecord | None:
    """The run a re-submitted job carries on: the latest run of this workflow, if it ran this very
    spec and did not end by itself (its driver or coordinator was lost)."""
    store = open_store(settings)
    latest = next(iter(store.list_runs(workflow=spec.name, limit=1)), None)
    if latest is None or latest.spec != spec_data(spec):
        return None
    if latest.status in ("pending", "running"):
        return None if _still_beating(settings, latest) else latest
    if latest.status in ("failed", "cancelled") and (latest.error or "").startswith(LOST):
        return latest
    return None


def _still_beating(settings: Settings, record: RunRecord) -> bool:
    """Whether a pending or running run is alive: its coordinator is on this cluster, or its
    heartbeat moves (it runs on another cluster, e.g. a second private local instance). A run
    lost moments ago keeps a fresh heartbeat, so this watches it for two beats and a second."""
    if coordinator_alive(record.id):
        return True
    store = open_store(settings)
    if record.heartbeat_at is None:  # never started: alive until it goes stale
        return (utcnow() - record.created_at).total_seconds() < settings.stale_after_seconds
    deadline = time.monotonic() + 2 * settings.heartbeat_seconds + 1
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if store.get_run(record.id).heartbeat_at != record.heartbeat_at:
            return True
    return False


def coordinator_alive(run_id: str) -> bool:
    try:
        ray.get_actor(run_actor_name(run_id), namespace=NAMESPACE)
        return True
    except ValueError:
        return False


def run_secrets(spec: WorkflowSpec) -> dict[str, SecretStr]:
    """The variables holding a database source's DSN and the providers' keys and tokens, as the
    driver has them, handed to the coordinator as an argument (its workers ask it for them).
    Not through runtime_env: Ray shows a runtime_env's variables on the dashboard."""
    names = [getattr(spec.source, "dsn_env", None)]
    names += [n for augmenter in build_chain(spec) for n in augmenter.secret_names(spec.providers)]
    return {name: SecretStr(os.environ[name]) for name in dict.fromkeys(names) if name and os.environ.get(name)}


class CancelError(Exception):
    """A run that cannot be cancelled from here, with the reason."""


def cancel_run(settings: Settings, run_id: str, reason: str = "cancelled by user") -> RunRecord:
    """Cancel a pending or running run on this cluster: it ends 'cancelled', with what it wrote
    kept and reported, and its coordinator and Ray Data work stop."""
    store = open_store(settings)
    record = store.find_run(run_id)
    if record.status in FINAL_STATUSES:
        raise CancelError(f"run {record.id} already ended: {record.status}")
    if not ray.is_initialized():
        raise CancelError(f"run {record.id} cannot be reached: this process is not on a Ray cluster")
    try:
        coordinator = ray.get_actor(run_actor_name(record.id), namespace=NAMESPACE)
    except ValueError:
        try:
            ray.get_actor(consumer_name(record.workflow), namespace=NAMESPACE)
            raise CancelError(f"run {record.id} is consumed from a stream: stop it with"
                              f" `augment stream stop {record.workflow}`") from None
        except ValueError:
            pass
        raise CancelError(
            f"run {record.id} cannot be reached: it has no coordinator on this cluster"
            " (is AUGMENT_RAY_ADDRESS the run's cluster?)"
        ) from None
    ray.get(coordinator.cancel.remote(reason), timeout=60)
    ray.kill(coordinator, no_restart=True)
    return store.get_run(record.id)


def live_view(record: RunRecord) -> RunRecord:
    """The run with live step progress from its coordinator, when it is running on this cluster."""
    if record.status not in ("pending", "running") or not ray.is_initialized():
        return record
    try:
        coordinator = ray.get_actor(run_actor_name(record.id), namespace=NAMESPACE)
        snapshot = cast(dict[str, Any], ray.get(coordinator.snapshot.remote(), timeout=5))
    except Exception:  # not on this cluster, or it just ended: the stored view stands
        return record
    return record.model_copy(
        update={"steps": [StepState(**s) for s in snapshot["steps"]], "status": snapshot["status"]}
    )


def read_run(settings: Settings, run_id: str) -> RunRecord:
    """A run as stored (a read: runs whose driver died are failed by the reaper, not here), with
    live step progress while it runs on this cluster."""
    return live_view(open_store(settings).find_run(run_id))
