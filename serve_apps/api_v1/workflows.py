"""/v1/workflows: the specs this API serves, and the online augment call on one of them."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from starlette.concurrency import run_in_threadpool

from augment_core.identity import Principal
from pipelines.engine.inprocess import AugmentResult, InProcessEngine
from pipelines.workflows.folder import WorkflowUnusable
from serve_apps.api_v1.admission import Admission
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
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.redact import sees_paths
from serve_apps.gateway.spend import CallerSpend, calls_providers, open_spend, spending

log = logging.getLogger(__name__)
router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=JsonBodyRoute)

# Requests of up to this many records are worked on the event loop; larger ones in the thread
# pool, so that one cannot hold the loop long. The sample workflow takes 2.9 ms for one record
# (mostly fixed cost) and 4.6 ms for 16, in one process on the 2-core development machine.
ON_LOOP_RECORDS = 16

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
async def augment(name: WorkflowName, body: AugmentRequest, caller: Operator, request: Request,
                  workflows: WorkflowsDep) -> AugmentResponse:
    """Validate and augment records with the batch path's code; invalid records come back one by one.
    Provider calls spend from the caller's daily cap: a request once it is used up is refused
    (429), and records whose calls a request's last dollars do not cover are 'skipped: budget'."""
    try:
        # Built once per version of its spec; the build (reference tables, models) waits in the pool.
        built = workflows.built(name)
        workflow = built if built is not None else await run_in_threadpool(workflows.online, name)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow named {name!r}") from None
    except WorkflowUnusable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": str(exc), "errors": exc.errors}) from None
    except OSError as exc:
        raise workflows_unreadable(exc) from None
    admission = request.app.state.admission
    if calls_providers(workflow):
        # Provider calls wait on the network and on their limiters, in the pool; the caller's cap is
        # read first (the shared quota store), and a request past it is refused before any call.
        result, spend = await run_in_threadpool(augment_calling_providers, workflow, body.records,
                                                get_gate(request), caller)
    else:
        # A workflow without provider calls costs nothing: it is not refused at the cap. Its work is
        # all CPU, admitted as the replica has room (admission.py). A small request is worked on the
        # event loop: a hop to the pool and back cost more than the work, and the threads then
        # contended for the one interpreter (docs/benchmarks.md, "Speed round, part 8").
        spend = open_spend(get_gate(request), caller, refuse_at_cap=False)
        if len(body.records) <= ON_LOOP_RECORDS:
            async with admission.admit_on_loop():
                result = workflow.augment(body.records)
        else:
            result = await run_in_threadpool(augment_admitted, workflow, body.records, admission)
    return AugmentResponse(
        workflow=workflow.spec.name,
        version=workflow.spec.version,
        counts=Counts(in_=len(body.records), valid=len(result.records), quarantined=len(result.invalid)),
        records=result.records,
        invalid=result.invalid,
        spend=SpendOut(request_usd=round(spend.spent_usd, 8), cap_usd=spend.cap, cap_reached=spend.exhausted),
    )


def augment_calling_providers(workflow: InProcessEngine, records: list[Any], gate: Gate,
                              caller: Principal) -> tuple[AugmentResult, CallerSpend]:
    spend = open_spend(gate, caller, refuse_at_cap=True)
    with spending(spend):
        return workflow.augment(records), spend


def augment_admitted(workflow: InProcessEngine, records: list[Any], admission: Admission) -> AugmentResult:
    with admission.admit():
        return workflow.augment(records)


def workflows_unreadable(exc: OSError) -> HTTPException:
    """503 for a workflows folder that cannot be read; its path and the error stay in the log."""
    log.warning("workflows folder unreadable: %s", exc)
    what = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({type(exc).__name__})"
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                         f"the workflows folder (AUGMENT_WORKFLOWS_DIR) {what}; the API's log has its path")

