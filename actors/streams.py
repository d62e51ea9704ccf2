"""Starting, stopping and reading stream consumers: the only place that creates StreamConsumer actors.

A workflow has at most one consumer (the actor name `stream-<workflow>` is unique on a cluster).
Each start is a new run. A run that did not end with its output catalogued (it crashed, was
killed, or its stop timed out) leaves its folder open: the next start writes on into that
folder, so that the messages it takes over can be checked against it and nothing is written
twice; the stop that succeeds catalogues the folder as one dataset version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from actors.alert_watcher import ensure_watchers
from actors.naming import NAMESPACE, consumer_name
from actors.runs import new_run_id, run_secrets
from actors.stream_consumer import CrashHook, StreamConsumerActor
from augment_core.errors import describe_error
from augment_core.settings import Settings
from augment_core.storage import StoragePaths
from augment_core.store import (
    FINAL_STATUSES,
    MetadataStore,
    RunRecord,
    open_store,
)
from pipelines.spec.workflow import RedisStreamSource, WorkflowSpec

START_TIMEOUT_S = 120.0
NAME_RELEASE_S = 30.0  # how long a killed consumer's name may stay taken


class StreamError(Exception):
    """A stream that cannot be started, stopped or found, with the reason."""


@dataclass
class StreamStatus:
    run: RunRecord | None  # the latest run of the workflow's stream, if any
    consuming: bool  # its consumer answers on this cluster


def start_stream(settings: Settings, spec: WorkflowSpec, spec_path: str, crash: CrashHook | None = None) -> RunRecord:
    """Start the workflow's consumer as a new run; returns the run, 'running' unless setup failed
    (then 'failed', with the reason). `crash` is for fault tests only."""
    source = spec.source
    if not isinstance(source, RedisStreamSource):
        raise StreamError(f"workflow {spec.name} reads a {source.kind} source, not a redis_stream: use `augment run`")
    if not settings.redis_url:
        raise StreamError("AUGMENT_REDIS_URL is not set: a redis_stream source is read from that Redis")
    store = open_store(settings)
    ensure_watchers(settings)  # the reaper fails the run if the consumer dies
    name = consumer_name(spec.name)
    live = _snapshot(name)
    if live is not None:
        raise StreamError(f"workflow {spec.name} is already consuming (run {live['run_id']}): stop it first")
    run_id = new_run_id()
    previous = latest_stream_run(store, spec.name)
    if previous is not None and previous.status not in FINAL_STATUSES:  # its consumer no longer answers
        store.finish_run(previous.id, "failed", error="stream consumer lost: its actor is gone")
    folder_run = _open_folder(store, spec, previous) or run_id
    store.create_run(run_id, spec.name, spec.version, spec_path, spec.run_step_names())
    store.update_run(run_id, output={"dataset": spec.sink.dataset, "stream": source.stream, "group": source.group,
                                     "folder_run": folder_run, "partial": True, "rows_written": 0,
                                     "path": StoragePaths(settings).dataset_run(spec.sink.dataset, folder_run)})
    try:
        consumer = _create(name, settings, run_id, spec, folder_run, crash)
        status = cast(str, ray.get(consumer.start.remote(), timeout=START_TIMEOUT_S))
    except Exception as exc:
        store.finish_run(run_id, "failed", error=f"could not start the stream consumer: {describe_error(exc)}")
        raise StreamError(f"could not start the stream consumer: {describe_error(exc)}") from None
    if status != "running":  # setup failed; the run says why
        ray.kill(consumer, no_restart=True)
    return store.get_run(run_id)


def stop_stream(settings: Settings, workflow: str, timeout: float = 60.0) -> RunRecord:
    """Stop the workflow's consumer: 'succeeded' with its output catalogued once the micro-batch
    in hand is written, else 'cancelled' (output kept, continued by the next start)."""
    store = open_store(settings)
    try:
        consumer = ray.get_actor(consumer_name(workflow), namespace=NAMESPACE)
    except ValueError:
        raise StreamError(f"workflow {workflow} has no stream consumer on this cluster") from None
    try:
        ray.get(consumer.stop.remote(timeout), timeout=timeout + 30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
        run = latest_stream_run(store, workflow)
        if run is not None:
            store.finish_run(run.id, "cancelled", error=f"stopped: the consumer did not answer ({describe_error(exc)})")
    finally:
        ray.kill(consumer, no_restart=True)
    run = latest_stream_run(store, workflow)
    assert run is not None, "a consumer always has a run"
    return run


def stream_status(settings: Settings, workflow: str) -> StreamStatus:
    store = open_store(settings)
    run = latest_stream_run(store, workflow)
    live = _snapshot(consumer_name(workflow)) if ray.is_initialized() else None
    if run is not None and live is not None and live["run_id"] == run.id and run.status == "running":
        run = run.model_copy(update={"counts": live["counts"]})  # fresher than the last stored beat
    return StreamStatus(run=run, consuming=live is not None)


def latest_stream_run(store: MetadataStore, workflow: str) -> RunRecord | None:
    for run in store.list_runs(limit=50, workflow=workflow):
        if run.output.get("stream"):
            return run
    return None


def _open_folder(store: MetadataStore, spec: WorkflowSpec, previous: RunRecord | None) -> str | None:
    """The run whose folder the new run writes on into: the previous run's, unless it was
    catalogued (a version is immutable) or belongs to another sink or stream. A folder whose
    version was reserved but never published (its run was reaped before its final write) is
    written on into: its acknowledged messages are in no version yet."""
    if previous is None or not previous.output.get("partial"):
        return None
    out, source = previous.output, spec.source
    assert isinstance(source, RedisStreamSource)
    if (out.get("dataset"), out.get("stream"), out.get("group")) != (spec.sink.dataset, source.stream, source.group):
        return None
    if store.catalogued_version(out["path"]) is not None:
        return None
    return out.get("folder_run")


def _create(name: str, settings: Settings, run_id: str, spec: WorkflowSpec, folder_run: str,
            crash: CrashHook | None) -> ActorHandle:
    """The detached, named consumer; waits while a just-killed one still holds the name."""
    deadline = time.monotonic() + NAME_RELEASE_S
    while True:
        try:
            return StreamConsumerActor.options(
                name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=0
            ).remote(settings, run_id, spec, folder_run, run_secrets(spec), crash)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _snapshot(name: str) -> dict[str, Any] | None:
    """The consumer's snapshot, or None when there is none or it does not answer."""
    try:
        consumer = ray.get_actor(name, namespace=NAMESPACE)
        return cast(dict[str, Any], ray.get(consumer.snapshot.remote(), timeout=15))
    except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None
