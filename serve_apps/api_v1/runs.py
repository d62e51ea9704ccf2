"""/v1/runs: recent runs from the metadata store, and one run live from its coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from actors.runs import CancelError, cancel_run, read_run
from augment_core.audit import record
from augment_core.events import Event, follow_run
from serve_apps.api_v1.deps import SettingsDep, StoreDep
from serve_apps.api_v1.schemas import RunOut
from serve_apps.gateway.api_auth import Operator, Refusal, Viewer, get_gate

router = APIRouter(prefix="/runs", tags=["runs"])
RunId = Annotated[str, Path(min_length=1, max_length=64, description="A run id or an unambiguous prefix of one.")]
MAX_SEQ = 2**63 - 1  # what the event tables' BIGINT holds


@router.get("", response_model=list[RunOut])
def list_runs(
    _: Viewer,
    settings: SettingsDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    workflow: Annotated[str | None, Query(description="Only runs of this workflow.")] = None,
) -> list[RunOut]:
    """Newest first. Runs whose driver died are failed first, so none shows 'running' forever."""
    store.reap_stale_runs(settings.stale_after_seconds)
    return [RunOut.from_record(r) for r in store.list_runs(limit=limit, workflow=workflow)]


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "No such run"}})
def get_run(run_id: RunId, _: Viewer, settings: SettingsDep) -> RunOut:
    """One run by id (or unambiguous prefix), with live step progress while it runs."""
    try:
        return RunOut.from_record(read_run(settings, run_id))
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
        cancelled = RunOut.from_record(cancel_run(settings, run_id))
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    except CancelError as exc:
        record(store, caller.label, "run.cancel", run_id, "refused", str(exc))
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    record(store, caller.label, "run.cancel", cancelled.id)
    return cancelled


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
    store.reap_stale_runs(settings.stale_after_seconds)
    try:
        found = store.find_run(run_id).id
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    gate = get_gate(request)
    cap = settings.max_streams_per_caller
    if not gate.open_stream(caller.quota_id, cap):
        raise Refusal(429, f"{cap} event streams are open for {caller.user} already: close one first",
                      headers={"Retry-After": str(KEEPALIVE_SECONDS)})

    async def frames() -> AsyncIterator[str]:
        # Each look at the bus is a quick read in a worker thread; the waits between are asyncio
        # sleeps, so open streams do not hold the threads that the API's other endpoints run on.
        quiet = idle = 0.0
        start = last_event_id if last_event_id is not None else after
        batches = follow_run(settings, found, start, follow=True, block_seconds=0)
        try:
            while (events := await asyncio.to_thread(next, batches, None)) is not None:
                quiet, idle = (0.0, 0.0) if events else (quiet + POLL_SECONDS, idle + POLL_SECONDS)
                if idle >= settings.stream_idle_seconds:
                    yield ": idle, closing; reconnect with Last-Event-ID to go on\n\n"
                    return
                if quiet >= KEEPALIVE_SECONDS:  # one empty look a second while nothing happens
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                for event in events:
                    yield _frame(event)
                if not events:
                    await asyncio.sleep(POLL_SECONDS)
        finally:
            await asyncio.to_thread(gate.close_stream, caller.quota_id)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _frame(event: Event) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
