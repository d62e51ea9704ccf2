"""/v1/users (admin): list, create, change the role of, disable and enable users — what `augment
users` does, through the same functions of augment_core/identity.py, each change audited (refused
ones too). Passwords are set here only when a user is created; never shown, never audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from augment_core.audit import record
from augment_core.identity import USER_NAME, Identity, IdentityError, Principal, User
from augment_core.store import MetadataStore
from serve_apps.api_v1.deps import StoreDep
from serve_apps.api_v1.errors import JsonBodyRoute
from serve_apps.api_v1.schemas import RoleChange, UserCreate, UserOut
from serve_apps.gateway.api_auth import Admin

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
    user = _change(store, caller, "user.create", body.name, status.HTTP_409_CONFLICT,
                   lambda identity: identity.create_user(body.name, body.role, password))
    return UserOut.from_user(user)


@router.post("/{name}/role", response_model=UserOut, responses=CHANGE_RESPONSES)
def set_role(name: UserName, body: RoleChange, caller: Admin, store: StoreDep) -> UserOut:
    """Change a user's role; their keys and sessions carry the new one within the auth cache time."""
    _not_yourself(store, caller, "user.set_role", name, body.role.value != "admin")
    return UserOut.from_user(_change(store, caller, "user.set_role", name, status.HTTP_404_NOT_FOUND,
                                     lambda identity: identity.set_role(name, body.role)))


@router.post("/{name}/disable", response_model=UserOut, responses=CHANGE_RESPONSES)
def disable(name: UserName, caller: Admin, store: StoreDep) -> UserOut:
    """Stop a user: their keys stop working and their sessions end."""
    _not_yourself(store, caller, "user.disable", name, True)
    return UserOut.from_user(_change(store, caller, "user.disable", name, status.HTTP_404_NOT_FOUND,
                                     lambda identity: identity.set_disabled(name, True)))


@router.post("/{name}/enable", response_model=UserOut, responses={404: {"description": "No such user"}})
def enable(name: UserName, caller: Admin, store: StoreDep) -> UserOut:
    return UserOut.from_user(_change(store, caller, "user.enable", name, status.HTTP_404_NOT_FOUND,
                                     lambda identity: identity.set_disabled(name, False)))


def _not_yourself(store: MetadataStore, caller: Principal, action: str, name: str, locks_out: bool) -> None:
    """An admin does not demote or disable themselves over the API: the last admin would lock
    everyone out of user management (the CLI on the server can still do it)."""
    if locks_out and name == caller.user:
        reason = f"{caller.user} may not demote or disable themselves; another admin (or `augment users`) can"
        record(store, caller.label, action, name, "refused", reason)
        raise HTTPException(status.HTTP_409_CONFLICT, reason)


def _change(store: MetadataStore, caller: Principal, action: str, name: str, refused_status: int,
            change: Callable[[Identity], User]) -> User:
    """Make a change and audit it, whatever the outcome. IdentityError is the caller's mistake: an
    unknown user is 404, any other `refused_status`."""
    try:
        user = change(Identity(store))
    except IdentityError as exc:
        record(store, caller.label, action, name, "refused", str(exc))
        code = status.HTTP_404_NOT_FOUND if str(exc).startswith("no user") else refused_status
        raise HTTPException(code, str(exc)) from None
    state = "disabled" if user.disabled else "enabled"
    record(store, caller.label, action, user.name, detail=f"role {user.role.value}, {state}")
    return user
