"""/v1/keys: API keys, through serve_apps/identity_actions.py (which the admin panel uses too).

Admins manage everyone's keys. Every other user manages their own: lists and revokes them with a
key or a session, but creates one only when signed in with their password (a session), so a leaked
key cannot mint keys that outlive its revocation; and only admins set a key's own rate or spend
cap (others get the gateway's defaults). The secret is in the create response once, never in the
audit log or a listing. Another user's key is 'not found' to a non-admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from augment_core.identity import KEY_START, USER_NAME
from serve_apps import identity_actions
from serve_apps.api_v1.deps import StoreDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import KeyCreate, KeyCreated, KeyOut
from serve_apps.gateway.api_auth import Viewer
from serve_apps.refusal import ActionRefused

router = APIRouter(prefix="/keys", tags=["keys"], route_class=JsonBodyRoute)
KeyPrefix = Annotated[str, Path(pattern=f"^{KEY_START}[0-9a-f]{{8}}$", description="The key's prefix, aug_…")]


@router.get("", response_model=list[KeyOut])
def list_keys(
    caller: Viewer,
    store: StoreDep,
    user: Annotated[str | None, Query(pattern=USER_NAME.pattern, description="Only this user's keys (admins).")]
    = None,
) -> list[KeyOut]:
    """Admins: every key (or one user's). Others: their own."""
    try:
        return [KeyOut.from_key(k) for k in identity_actions.list_keys(store, caller, user)]
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated,
             responses={403: {"description": "Not yours to create"}, 404: {"description": "No such user"},
                        409: {"description": "The user is disabled"}})
def create_key(body: KeyCreate, caller: Viewer, store: StoreDep) -> KeyCreated:
    """A new key; its secret is in this response only."""
    try:
        key, secret = identity_actions.create_key(store, caller, body.name, body.user, body.days,
                                                  body.rate_per_minute, body.daily_spend_usd)
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None
    return KeyCreated(key=KeyOut.from_key(key), secret=secret)


@router.post("/{prefix}/revoke", response_model=KeyOut, responses={404: {"description": "No such key"}})
def revoke_key(prefix: KeyPrefix, caller: Viewer, store: StoreDep) -> KeyOut:
    """Stop a key on every replica within the auth cache time. Revoking it again changes nothing."""
    try:
        return KeyOut.from_key(identity_actions.revoke_key(store, caller, prefix))
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None
