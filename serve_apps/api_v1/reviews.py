"""/v1/reviews: the review queue, and accept / edit / reject / rerun on one item.

A decided item takes the same action again unchanged (200) and refuses another one (409) until
it is rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError

from augment_core.audit import record
from augment_core.identity import Principal
from augment_core.reviews import ReviewConflict, ReviewItem, get_item, list_items
from pipelines.operations import review_actions
from pipelines.workflows.folder import WorkflowUnusable
from serve_apps.api_v1.deps import SettingsDep, StoreDep, WorkflowsDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import ReviewEdit, ReviewItemOut, ReviewPage
from serve_apps.api_v1.workflows import calls_providers
from serve_apps.gateway.api_auth import Operator, Viewer, get_gate
from serve_apps.gateway.spend import SpendCapReached, open_spend, spending

router = APIRouter(prefix="/reviews", tags=["reviews"], route_class=JsonBodyRoute)
# Ids the database's BIGINT holds: a larger one is a 422, not a database error.
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The review item's id.")]
ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such item"}, 409: {"description": "The item carries another decision"},
}


def _out(item: ReviewItem) -> ReviewItemOut:
    return ReviewItemOut(**item.model_dump())


@router.get("", response_model=ReviewPage)
def list_queue(
    _: Viewer,
    store: StoreDep,
    dataset: Annotated[str | None, Query(max_length=200, description="Only items of this dataset.")] = None,
    state: Annotated[Literal["pending", "accepted", "edited", "rejected"] | None, Query()] = None,
    run_id: Annotated[str | None, Query(max_length=64, description="Only items this run proposed.")] = None,
    workflow: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> ReviewPage:
    """Items oldest first, filtered, one page at a time."""
    items, total = list_items(store, dataset=dataset, state=state, run_id=run_id, workflow=workflow,
                              limit=limit, offset=offset)
    return ReviewPage(items=[_out(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/{item_id}", response_model=ReviewItemOut, responses={404: {"description": "No such item"}})
def get_one(item_id: ItemId, _: Viewer, store: StoreDep) -> ReviewItemOut:
    try:
        return _out(get_item(store, item_id))
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None


@router.post("/{item_id}/accept", response_model=ReviewItemOut, responses=ACTION_RESPONSES)
def accept(item_id: ItemId, caller: Operator, settings: SettingsDep, store: StoreDep) -> ReviewItemOut:
    """Keep the proposed value. Accepting again changes nothing."""
    return _act(store, caller, "review.accept", item_id, lambda: review_actions.accept(settings, item_id, caller.user))


@router.post("/{item_id}/reject", response_model=ReviewItemOut, responses=ACTION_RESPONSES)
def reject(item_id: ItemId, caller: Operator, settings: SettingsDep, store: StoreDep) -> ReviewItemOut:
    """Drop the proposed value: promote writes null there and keeps the record."""
    return _act(store, caller, "review.reject", item_id, lambda: review_actions.reject(settings, item_id, caller.user))


@router.post("/{item_id}/edit", response_model=ReviewItemOut,
             responses={**ACTION_RESPONSES, 422: {"description": "The value does not fit the field's type"}})
def edit(item_id: ItemId, body: ReviewEdit, caller: Operator, settings: SettingsDep, store: StoreDep) -> ReviewItemOut:
    """Keep this value instead of the proposal."""
    return _act(store, caller, "review.edit", item_id,
                lambda: review_actions.edit(settings, item_id, body.value, caller.user))


@router.post("/{item_id}/rerun", response_model=ReviewItemOut,
             responses={404: {"description": "No such item"},
                        409: {"description": "The record cannot be augmented again (workflow gone or broken)"},
                        429: {"description": "The caller's daily provider spend cap is used up"}})
def rerun(item_id: ItemId, caller: Operator, request: Request, settings: SettingsDep, store: StoreDep,
          workflows: WorkflowsDep) -> ReviewItemOut:
    """Augment the record again now with the workflow; the result is the new proposal, pending.
    Its provider calls spend from the caller's daily cap, like an online augment."""
    try:
        workflow = get_item(store, item_id).workflow
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    try:
        paid = calls_providers(workflows.online(workflow))
    except (KeyError, WorkflowUnusable, OSError):
        paid = True  # the rerun itself says why the workflow cannot run (409)
    try:
        spend = open_spend(get_gate(request), caller, refuse_at_cap=paid)
    except SpendCapReached as exc:
        record(store, caller.label, "review.rerun", f"review item {item_id}", "refused", str(exc))
        raise

    def rerun_spending() -> ReviewItem:
        with spending(spend):
            return review_actions.rerun(settings, workflows, item_id)

    return _act(store, caller, "review.rerun", item_id, rerun_spending)


def _act(store: StoreDep, caller: Principal, action: str, item_id: int, do: Callable[[], ReviewItem]) -> ReviewItemOut:
    """Do a review action and write its audit entry, whatever the outcome."""
    target = f"review item {item_id}"
    try:
        item = do()
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    except (ReviewConflict, review_actions.RerunFailed) as exc:
        record(store, caller.label, action, target, "refused", str(exc))
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except review_actions.InvalidValue as exc:
        record(store, caller.label, action, target, "refused", str(exc))
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "value"), "msg": str(exc)}]) from None
    record(store, caller.label, action, target, detail=f"now {item.state}")
    return _out(item)
