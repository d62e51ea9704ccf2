"""Review decisions made from a Serve replica — the API's /v1/reviews and the review panel's
buttons both go through here, so both audit every attempt the same way, refused ones too, and a
rerun spends from the caller's daily provider cap wherever it is asked for. A refusal is an
`ActionRefused` with the status the API answers it with (404 no such item, 409 decided already or
cannot rerun, 422 a value that does not fit the field); a spent cap is `SpendCapReached` (429).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from augment_core.audit import record
from augment_core.identity import Principal
from augment_core.reviews import ReviewConflict, ReviewItem, get_item
from augment_core.settings import Settings
from augment_core.store import MetadataStore
from pipelines.operations import review_actions
from pipelines.workflows.folder import WorkflowFolder, WorkflowUnusable
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.spend import SpendCapReached, calls_providers, open_spend, spending
from serve_apps.refusal import ActionRefused


def accept(settings: Settings, store: MetadataStore, caller: Principal, item_id: int) -> ReviewItem:
    """Keep the proposed value. Accepting again changes nothing."""
    return act(store, caller, "review.accept", item_id, lambda: review_actions.accept(settings, item_id, caller.user))


def reject(settings: Settings, store: MetadataStore, caller: Principal, item_id: int) -> ReviewItem:
    """Drop the proposed value: promote writes null there and keeps the record."""
    return act(store, caller, "review.reject", item_id, lambda: review_actions.reject(settings, item_id, caller.user))


def edit(settings: Settings, store: MetadataStore, caller: Principal, item_id: int, value: Any) -> ReviewItem:
    """Keep this value instead of the proposal; it must fit the field's type exactly."""
    return act(store, caller, "review.edit", item_id,
               lambda: review_actions.edit(settings, item_id, value, caller.user))


def edit_text(settings: Settings, store: MetadataStore, caller: Principal, item_id: int, text: str) -> ReviewItem:
    """`edit` with the value as a person typed it on a page: a number for a number field,
    true/false for a boolean one; text that is no such value is refused (422) and audited."""
    def typed_edit() -> ReviewItem:
        item = get_item(store, item_id)
        value = review_actions.value_from_text(text, review_actions.field_type(settings, item), item.field)
        return review_actions.edit(settings, item_id, value, caller.user)

    return act(store, caller, "review.edit", item_id, typed_edit)


def rerun(settings: Settings, store: MetadataStore, gate: Gate, caller: Principal, workflows: WorkflowFolder,
          item_id: int) -> ReviewItem:
    """Augment the record again now with the workflow; the result is the new proposal, pending.
    Its provider calls spend from the caller's daily cap, like an online augment."""
    try:
        workflow = get_item(store, item_id).workflow
    except KeyError as exc:
        raise ActionRefused(404, str(exc.args[0])) from None
    try:
        paid = calls_providers(workflows.online(workflow))
    except (KeyError, WorkflowUnusable, OSError):
        paid = True  # the rerun itself says why the workflow cannot run (409)
    try:
        spend = open_spend(gate, caller, refuse_at_cap=paid)
    except SpendCapReached as exc:
        record(store, caller.label, "review.rerun", f"review item {item_id}", "refused", str(exc))
        raise

    def rerun_spending() -> ReviewItem:
        with spending(spend):
            return review_actions.rerun(settings, workflows, item_id)

    return act(store, caller, "review.rerun", item_id, rerun_spending)


def act(store: MetadataStore, caller: Principal, action: str, item_id: int, do: Callable[[], ReviewItem]) -> ReviewItem:
    """Do a review action and write its audit entry, whatever the outcome."""
    target = f"review item {item_id}"
    try:
        item = do()
    except KeyError as exc:
        raise ActionRefused(404, str(exc.args[0])) from None
    except (ReviewConflict, review_actions.RerunFailed) as exc:
        record(store, caller.label, action, target, "refused", str(exc))
        raise ActionRefused(409, str(exc)) from None
    except review_actions.InvalidValue as exc:
        record(store, caller.label, action, target, "refused", str(exc))
        raise ActionRefused(422, str(exc)) from None
    record(store, caller.label, action, target, detail=f"now {item.state}")
    return item
