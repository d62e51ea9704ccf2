"""/v1/runs: recent runs from the metadata store, and one run live from its coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from actors.runs import read_run
from augment_core.events import Event, follow_run
from augment_core.identity import Principal
from augment_core.settings import Settings
from augment_core.store import RunRecord
from serve_apps import run_actions
from serve_apps.api_v1.deps import SettingsDep, StoreDep
from serve_apps.api_v1.schemas import RunOut
from serve_apps.gateway.api_auth import Operator, Refusal, Viewer, get_gate
from serve_apps.gateway.redact import hide_paths, run_without_paths, sees_paths
from serve_apps.refusal import ActionRefused

router = APIRouter(prefix="/runs", tags=["runs"])
RunId = Annotated[str, Path(min_length=1, max_length=64, description="A run id or an unambiguous prefix of one.")]
MAX_SEQ = 2**63 - 1  # what the event tables' BIGINT holds


@router.get("", response_model=list[RunOut])
def list_runs(
    caller: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    workflow: Annotated[str | None, Query(max_length=100, description="Only runs of this workflow.")] = None,
) -> list[RunOut]:
    """Newest first. Runs whose driver died show 'failed' once the cluster's reaper failed them."""
    return [shown(r, caller, settings) for r in store.list_runs(limit=limit, workflow=workflow)]


def shown(run: RunRecord, caller: Principal, settings: Settings) -> RunOut:
    """The run as `caller` may see it: a viewer sees no filesystem path (serve_apps/gateway/redact.py)."""
    return RunOut.from_record(run if sees_paths(caller) else run_without_paths(run, settings.storage_root))


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "No such run"}})
def get_run(run_id: RunId, caller: Viewer, settings: SettingsDep) -> RunOut:
    """One run by id (or unambiguous prefix), with live step progress while it runs."""
    try:
        return shown(read_run(settings, run_id), caller, settings)
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None


@router.post(
    "/{run_id}/cancel",
    response_model=RunOut,
    responses={404: {"description": "No such run"}, 409: {"description": "The run has ended or cannot be reached"}},
)
def cancel(run_id: RunId, caller: Operator, settings: SettingsDep, store: StoreDep) -> RunOut:
    """Stop a pending or running run: it ends 'cancelled', keeping what it wrote."""
    try:
        return RunOut.from_record(run_actions.cancel(settings, store, caller.label, run_id))
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None


KEEPALIVE_SECONDS = 15  # a comment line this often keeps proxies from closing a quiet stream
POLL_SECONDS = 1.0  # how long a quiet stream waits before it looks at the bus again


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
               404: {"description": "No such run"}},
)
def run_events(
    run_id: RunId,
    request: Request,
    caller: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only events with a sequence number above this.")] = 0,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_SEQ, description="Set by a reconnecting EventSource; wins over `after`.")
    ] = None,
) -> StreamingResponse:
    """The run's events as server-sent events (`id:` is the sequence number), live until
    run.finished. A reconnect with Last-Event-ID (or ?after=) resumes right after that event.
    Each caller holds at most `max_streams_per_caller` streams open (429 beyond), and a stream
    with no event for `stream_idle_seconds` closes: an EventSource reconnects where it left off."""
    try:
        found = store.find_run(run_id).id
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    gate = get_gate(request)
    cap = settings.max_streams_per_caller
    if not gate.open_stream(caller.quota_id, cap):
        raise Refusal(429, f"{cap} event streams are open for {caller.user} already: close one first",
                      headers={"Retry-After": str(KEEPALIVE_SECONDS)})

    paths = sees_paths(caller)

    async def frames() -> AsyncIterator[str]:
        # Each look at the bus is a quick read in a worker thread; the waits between are asyncio
        # sleeps, so open streams do not hold the threads that the API's other endpoints run on.
        quiet = idle = 0.0
        start = last_event_id if last_event_id is not None else after
        batches = follow_run(settings, found, start, follow=True, block_seconds=0)
        while (events := await asyncio.to_thread(next, batches, None)) is not None:
            quiet, idle = (0.0, 0.0) if events else (quiet + POLL_SECONDS, idle + POLL_SECONDS)
            if idle >= settings.stream_idle_seconds:
                yield ": idle, closing; reconnect with Last-Event-ID to go on\n\n"
                return
            if quiet >= KEEPALIVE_SECONDS:  # one empty look a second while nothing happens
                quiet = 0.0
                yield ": keep-alive\n\n"
            for event in events:
                yield _frame(event, paths)
            if not events:
                await asyncio.sleep(POLL_SECONDS)

    return CountedStream(frames(), release=lambda: gate.close_stream(caller.quota_id), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class CountedStream(StreamingResponse):
    """A stream counted open (Gate.open_stream) that gives its count back however it ends: body
    done, sending failed, or the client gone before the first event — then the body's generator
    never starts, and a `finally` inside it would never run."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):  # a cancelled request still gives its count back
                await anyio.to_thread.run_sync(self.release)


def _frame(event: Event, paths: bool) -> str:
    data = event.model_dump_json()
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data if paths else hide_paths(data)}\n\n"
