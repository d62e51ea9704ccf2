"""/v1/users (admin): list, create, change the role of, disable and enable users — what `augment
users` does, through serve_apps/identity_actions.py (which the admin panel uses too), each change
audited (refused ones too). Passwords are set here only when a user is created; never shown, never
audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from augment_core.identity import USER_NAME, Identity, User
from serve_apps import identity_actions
from serve_apps.api_v1.deps import StoreDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import RoleChange, UserCreate, UserOut
from serve_apps.gateway.api_auth import Admin
from serve_apps.refusal import ActionRefused

router = APIRouter(prefix="/users", tags=["users"], route_class=JsonBodyRoute)
UserName = Annotated[str, Path(pattern=USER_NAME.pattern, description="The user's name.")]
CHANGE_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "No such user"}, 409: {"description": "An admin may not lock themselves out"},
}


@router.get("", response_model=list[UserOut])
def list_users(_: Admin, store: StoreDep) -> list[UserOut]:
    return [UserOut.from_user(u) for u in Identity(store).list_users()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut,
             responses={409: {"description": "The user exists already"}})
def create_user(body: UserCreate, caller: Admin, store: StoreDep) -> UserOut:
    password = body.password.get_secret_value() if body.password is not None else None
    return _out(lambda: identity_actions.create_user(store, caller, body.name, body.role, password))


@router.post("/{name}/role", response_model=UserOut, responses=CHANGE_RESPONSES)
def set_role(name: UserName, body: RoleChange, caller: Admin, store: StoreDep) -> UserOut:
    """Change a user's role; their keys and sessions carry the new one within the auth cache time."""
    return _out(lambda: identity_actions.set_role(store, caller, name, body.role))


@router.post("/{name}/disable", response_model=UserOut, responses=CHANGE_RESPONSES)
def disable(name: UserName, caller: Admin, store: StoreDep) -> UserOut:
    """Stop a user: their keys stop working and their sessions end."""
    return _out(lambda: identity_actions.set_disabled(store, caller, name, True))


@router.post("/{name}/enable", response_model=UserOut, responses={404: {"description": "No such user"}})
def enable(name: UserName, caller: Admin, store: StoreDep) -> UserOut:
    return _out(lambda: identity_actions.set_disabled(store, caller, name, False))


def _out(change: Callable[[], User]) -> UserOut:
    try:
        return UserOut.from_user(change())
    except ActionRefused as exc:
        raise HTTPException(exc.status, exc.message) from None
