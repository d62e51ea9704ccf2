"""/v1/reviews: the review queue, and accept / edit / reject / rerun on one item.

A decided item takes the same action again unchanged (200) and refuses another one (409) until
it is rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError

from augment_core.reviews import ReviewItem, get_item, list_items
from serve_apps import review_decisions
from serve_apps.api_v1.deps import SettingsDep, StoreDep, WorkflowsDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import ReviewEdit, ReviewItemOut, ReviewPage
from serve_apps.gateway.api_auth import Operator, Viewer, get_gate
from serve_apps.refusal import ActionRefused

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
    return _answer(lambda: review_decisions.accept(settings, store, caller, item_id))


@router.post("/{item_id}/reject", response_model=ReviewItemOut, responses=ACTION_RESPONSES)
def reject(item_id: ItemId, caller: Operator, settings: SettingsDep, store: StoreDep) -> ReviewItemOut:
    """Drop the proposed value: promote writes null there and keeps the record."""
    return _answer(lambda: review_decisions.reject(settings, store, caller, item_id))


@router.post("/{item_id}/edit", response_model=ReviewItemOut,
             responses={**ACTION_RESPONSES, 422: {"description": "The value does not fit the field's type"}})
def edit(item_id: ItemId, body: ReviewEdit, caller: Operator, settings: SettingsDep, store: StoreDep) -> ReviewItemOut:
    """Keep this value instead of the proposal."""
    return _answer(lambda: review_decisions.edit(settings, store, caller, item_id, body.value))


@router.post("/{item_id}/rerun", response_model=ReviewItemOut,
             responses={404: {"description": "No such item"},
                        409: {"description": "The record cannot be augmented again (workflow gone or broken)"},
                        429: {"description": "The caller's daily provider spend cap is used up"}})
def rerun(item_id: ItemId, caller: Operator, request: Request, settings: SettingsDep, store: StoreDep,
          workflows: WorkflowsDep) -> ReviewItemOut:
    """Augment the record again now with the workflow; the result is the new proposal, pending.
    Its provider calls spend from the caller's daily cap, like an online augment."""
    return _answer(lambda: review_decisions.rerun(settings, store, get_gate(request), caller, workflows, item_id))


def _answer(do: Callable[[], ReviewItem]) -> ReviewItemOut:
    try:
        return _out(do())
    except ActionRefused as exc:
        if exc.status == status.HTTP_422_UNPROCESSABLE_ENTITY:  # as FastAPI words a body that does not fit
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "value"), "msg": exc.message}]) \
                from None
        raise HTTPException(exc.status, exc.message) from None
