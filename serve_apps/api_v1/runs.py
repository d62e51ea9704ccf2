"""/v1/runs: recent runs from the metadata store, and one run live from its coordinator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from actors.runs import CancelError, cancel_run, read_run
from serve_apps.api_v1.deps import SettingsDep, StoreDep
from serve_apps.api_v1.schemas import RunOut

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", response_model=list[RunOut])
def list_runs(
    settings: SettingsDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    workflow: Annotated[str | None, Query(description="Only runs of this workflow.")] = None,
) -> list[RunOut]:
    """Newest first. Runs whose driver died are failed first, so none shows 'running' forever."""
    store.reap_stale_runs(settings.stale_after_seconds)
    return [RunOut.from_record(r) for r in store.list_runs(limit=limit, workflow=workflow)]


@router.get("/{run_id}", response_model=RunOut, responses={404: {"description": "No such run"}})
def get_run(run_id: str, settings: SettingsDep) -> RunOut:
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
def cancel(run_id: str, settings: SettingsDep) -> RunOut:
    """Stop a pending or running run: it ends 'cancelled', keeping what it wrote."""
    try:
        return RunOut.from_record(cancel_run(settings, run_id))
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    except CancelError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
