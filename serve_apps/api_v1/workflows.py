"""/v1/workflows: the specs this API serves, and the online augment call on one of them."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status

from pipelines.workflows.folder import WorkflowUnusable
from serve_apps.api_v1.deps import WorkflowsDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import (
    AugmentRequest,
    AugmentResponse,
    Counts,
    SpendOut,
    WorkflowOut,
)
from serve_apps.gateway.api_auth import Operator, Viewer, get_gate
from serve_apps.gateway.redact import sees_paths
from serve_apps.gateway.spend import calls_providers, open_spend, spending

log = logging.getLogger(__name__)
router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=JsonBodyRoute)

WorkflowName = Annotated[str, Path(max_length=100, description="The workflow's `name` from its spec.")]


@router.get("", response_model=list[WorkflowOut])
def list_workflows(caller: Viewer, workflows: WorkflowsDep) -> list[WorkflowOut]:
    """Every spec in the workflows folder; those that fail to load are listed with their errors.
    A viewer sees no filesystem path in them (serve_apps/gateway/redact.py)."""
    try:
        entries = workflows.entries()
    except OSError as exc:
        raise workflows_unreadable(exc) from None
    listed = [WorkflowOut.from_entry(e) for e in entries]
    return listed if sees_paths(caller) else [w.without_paths() for w in listed]


@router.post(
    "/{name}/augment",
    response_model=AugmentResponse,
    responses={404: {"description": "No such workflow"}, 409: {"description": "The workflow's spec is broken"},
               429: {"description": "Over the request rate, or the caller's daily provider spend cap is used up"},
               503: {"description": "The replica is at capacity: retry after Retry-After seconds"}},
)
def augment(name: WorkflowName, body: AugmentRequest, caller: Operator, request: Request,
            workflows: WorkflowsDep) -> AugmentResponse:
    """Validate and augment records with the batch path's code; invalid records come back one by one.
    Provider calls spend from the caller's daily cap: a request once it is used up is refused
    (429), and records whose calls a request's last dollars do not cover are 'skipped: budget'."""
    try:
        workflow = workflows.online(name)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow named {name!r}") from None
    except WorkflowUnusable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": str(exc), "errors": exc.errors}) from None
    except OSError as exc:
        raise workflows_unreadable(exc) from None
    # A workflow without provider calls costs nothing: it is not refused at the cap. Its work is
    # all CPU: admitted as the replica has room (admission.py); provider calls wait on their limiters.
    calls = calls_providers(workflow)
    spend = open_spend(get_gate(request), caller, refuse_at_cap=calls)
    with spending(spend), (nullcontext() if calls else request.app.state.admission.admit()):
        result = workflow.augment(body.records)
    return AugmentResponse(
        workflow=workflow.spec.name,
        version=workflow.spec.version,
        counts=Counts(in_=len(body.records), valid=len(result.records), quarantined=len(result.invalid)),
        records=result.records,
        invalid=result.invalid,
        spend=SpendOut(request_usd=round(spend.spent_usd, 8), cap_usd=spend.cap, cap_reached=spend.exhausted),
    )


def workflows_unreadable(exc: OSError) -> HTTPException:
    """503 for a workflows folder that cannot be read; its path and the error stay in the log."""
    log.warning("workflows folder unreadable: %s", exc)
    what = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({type(exc).__name__})"
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                         f"the workflows folder (AUGMENT_WORKFLOWS_DIR) {what}; the API's log has its path")

