"""/v1/keys: API keys, through the functions of augment_core/identity.py that `augment keys` uses.

Admins manage everyone's keys. Every other user manages their own: lists and revokes them with a
key or a session, but creates one only when signed in with their password (a session), so a leaked
key cannot mint keys that outlive its revocation; and only admins set a key's own rate or spend
cap (others get the gateway's defaults). The secret is in the create response once, never in the
audit log or a listing. Another user's key is 'not found' to a non-admin.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from augment_core.audit import record
from augment_core.identity import KEY_START, USER_NAME, Identity, IdentityError, Principal, Role
from augment_core.store import utcnow
from serve_apps.api_v1.deps import SettingsDep, StoreDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import KeyCreate, KeyCreated, KeyOut
from serve_apps.gateway.api_auth import Viewer

router = APIRouter(prefix="/keys", tags=["keys"], route_class=JsonBodyRoute)
KeyPrefix = Annotated[str, Path(pattern=f"^{KEY_START}[0-9a-f]{{8}}$", description="The key's prefix, aug_…")]


def _is_admin(caller: Principal) -> bool:
    return caller.role.allows(Role.admin)


@router.get("", response_model=list[KeyOut])
def list_keys(
    caller: Viewer,
    store: StoreDep,
    user: Annotated[str | None, Query(pattern=USER_NAME.pattern, description="Only this user's keys (admins).")]
    = None,
) -> list[KeyOut]:
    """Admins: every key (or one user's). Others: their own."""
    if not _is_admin(caller):
        if user not in (None, caller.user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only admins list other users' keys")
        user = caller.user
    return [KeyOut.from_key(k) for k in Identity(store).list_keys(user)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated,
             responses={403: {"description": "Not yours to create"}, 404: {"description": "No such user"},
                        409: {"description": "The user is disabled"}})
def create_key(body: KeyCreate, caller: Viewer, store: StoreDep) -> KeyCreated:
    """A new key; its secret is in this response only."""
    owner = body.user or caller.user
    refusal = None if _is_admin(caller) else _self_service_refusal(caller, body, owner)
    if refusal:
        record(store, caller.label, "key.create", f"for {owner}", "refused", refusal)
        raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)
    expires = utcnow() + dt.timedelta(days=body.days) if body.days else None
    try:
        key, secret = Identity(store).create_key(owner, body.name, expires, body.rate_per_minute, body.daily_spend_usd)
    except IdentityError as exc:
        record(store, caller.label, "key.create", f"for {owner}", "refused", str(exc))
        code = status.HTTP_404_NOT_FOUND if str(exc).startswith("no user") else status.HTTP_409_CONFLICT
        raise HTTPException(code, str(exc)) from None
    record(store, caller.label, "key.create", key.prefix, detail=_described(key.user, key.name, key.rate_per_minute,
                                                                             key.daily_spend_usd))
    return KeyCreated(key=KeyOut.from_key(key), secret=secret)


@router.post("/{prefix}/revoke", response_model=KeyOut, responses={404: {"description": "No such key"}})
def revoke_key(prefix: KeyPrefix, caller: Viewer, settings: SettingsDep, store: StoreDep) -> KeyOut:
    """Stop a key on every replica within the auth cache time. Revoking it again changes nothing."""
    identity = Identity(store)
    try:
        if not _is_admin(caller) and identity.get_key(prefix).user != caller.user:
            raise IdentityError(f"no key {prefix!r}")  # not one of theirs: as if it did not exist
        key = identity.revoke_key(prefix)
    except IdentityError as exc:
        record(store, caller.label, "key.revoke", prefix, "refused", str(exc))
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    record(store, caller.label, "key.revoke", key.prefix, detail=f"of {key.user}")
    return KeyOut.from_key(key)


def _self_service_refusal(caller: Principal, body: KeyCreate, owner: str) -> str | None:
    if owner != caller.user:
        return "only admins create keys for other users"
    if caller.via != "session":
        return "create your own keys signed in (a session), not with a key: a leaked key must not mint more"
    if body.rate_per_minute is not None or body.daily_spend_usd is not None:
        return "only admins set a key's own rate or daily spend cap"
    return None


def _described(user: str, name: str, rate: int | None, spend: float | None) -> str:
    limits = "".join([f", {rate}/min" if rate is not None else "", f", {spend:g} USD/day" if spend is not None else ""])
    return f"for {user}: {name}{limits}"
