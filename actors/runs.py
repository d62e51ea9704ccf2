"""Starting runs and reading them live: the only place that creates RunCoordinator actors."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from typing import Any

import ray
from pydantic import SecretStr

from actors.run_coordinator import NAMESPACE, RunCoordinator, actor_name
from augment_core.settings import Settings
from augment_core.store import FINAL_STATUSES, RunRecord, StepState, open_store
from pipelines.registry import build_chain
from pipelines.spec import WorkflowSpec


def new_run_id() -> str:
    """Sortable by time, unique by a random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def start_run(settings: Settings, spec: WorkflowSpec, spec_path: str) -> tuple[str, Any]:
    """Create the run row and its named coordinator; returns (run id, ref of the final status)."""
    store = open_store(settings)
    run_id = new_run_id()
    store.create_run(run_id, spec.name, spec.version, spec_path, ["validate", *spec.step_names(), "write"])
    try:
        coordinator = RunCoordinator.options(
            name=actor_name(run_id), namespace=NAMESPACE
        ).remote(settings, run_id, spec, _run_secrets(spec))
        return run_id, (coordinator, coordinator.execute.remote())
    except Exception as exc:
        store.finish_run(run_id, "failed", error=f"could not start the run coordinator: {exc}")
        raise


def _run_secrets(spec: WorkflowSpec) -> dict[str, SecretStr]:
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
    store.reap_stale_runs(settings.stale_after_seconds)
    record = store.find_run(run_id)
    if record.status in FINAL_STATUSES:
        raise CancelError(f"run {record.id} already ended: {record.status}")
    if not ray.is_initialized():
        raise CancelError(f"run {record.id} cannot be reached: this process is not on a Ray cluster")
    try:
        coordinator = ray.get_actor(actor_name(record.id), namespace=NAMESPACE)
    except ValueError:
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
        coordinator = ray.get_actor(actor_name(record.id), namespace=NAMESPACE)
        snapshot = ray.get(coordinator.snapshot.remote(), timeout=5)
    except Exception:  # not on this cluster, or it just ended: the stored view stands
        return record
    return record.model_copy(
        update={"steps": [StepState(**s) for s in snapshot["steps"]], "status": snapshot["status"]}
    )


def read_run(settings: Settings, run_id: str) -> RunRecord:
    store = open_store(settings)
    store.reap_stale_runs(settings.stale_after_seconds)
    return live_view(store.find_run(run_id))
