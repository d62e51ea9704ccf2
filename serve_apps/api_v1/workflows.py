"""/v1/workflows: the specs this API serves, and the online augment call on one of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from pipelines.workflows.folder import WorkflowUnusable
from serve_apps.api_v1.deps import WorkflowsDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import (
    AugmentRequest,
    AugmentResponse,
    Counts,
    WorkflowOut,
)
from serve_apps.gateway.api_auth import Operator, Viewer

router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=JsonBodyRoute)

WorkflowName = Annotated[str, Path(description="The workflow's `name` from its spec.")]


@router.get("", response_model=list[WorkflowOut])
def list_workflows(_: Viewer, workflows: WorkflowsDep) -> list[WorkflowOut]:
    """Every spec in the workflows folder; those that fail to load are listed with their errors."""
    try:
        entries = workflows.entries()
    except OSError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot list workflows: {exc}") from exc
    return [WorkflowOut.from_entry(e) for e in entries]


@router.post(
    "/{name}/augment",
    response_model=AugmentResponse,
    responses={404: {"description": "No such workflow"}, 409: {"description": "The workflow's spec is broken"}},
)
def augment(name: WorkflowName, body: AugmentRequest, _: Operator, workflows: WorkflowsDep) -> AugmentResponse:
    """Validate and augment records with the batch path's code; invalid records come back one by one."""
    try:
        workflow = workflows.online(name)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow named {name!r}") from None
    except WorkflowUnusable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"message": str(exc), "errors": exc.errors}) from None
    except OSError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot read workflows: {exc}") from exc
    result = workflow.augment(body.records)
    return AugmentResponse(
        workflow=workflow.spec.name,
        version=workflow.spec.version,
        counts=Counts(in_=len(body.records), valid=len(result.records), quarantined=len(result.invalid)),
        records=result.records,
        invalid=result.invalid,
    )
