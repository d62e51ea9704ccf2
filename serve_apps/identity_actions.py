"""Users and API keys changed from a Serve replica — the API's /v1/users and /v1/keys and the admin
panel's buttons both go through here, so both check and audit every attempt the same way, refused
ones too, through the functions of augment_core/identity.py that `augment users` and `augment keys`
use. A refusal is an `ActionRefused` with the status the API answers it with.

Admins manage every user and key. Any other caller manages their own keys: lists and revokes them,
but creates one only when signed in with their password (a session), so that a leaked key cannot
mint keys that outlive its revocation, and without a rate or spend cap of the key's own. Another
user's key is 'not found' to a non-admin. Secrets are never audited; passwords never shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from augment_core.audit import record
from augment_core.identity import ApiKey, Identity, IdentityError, Principal, Role, User
from augment_core.store import MetadataStore, utcnow
from serve_apps.refusal import ActionRefused


def is_admin(caller: Principal) -> bool:
    return caller.role.allows(Role.admin)


def _need_admin(store: MetadataStore, caller: Principal, action: str, target: str) -> None:
    if not is_admin(caller):
        reason = f"{action} needs the admin role; {caller.user} is {caller.role.value}"
        record(store, caller.label, action, target, "refused", reason)
        raise ActionRefused(403, reason)


def create_user(store: MetadataStore, caller: Principal, name: str, role: Role, password: str | None) -> User:
    """A new user; without a password, one who uses API keys only."""
    _need_admin(store, caller, "user.create", name)
    return _change(store, caller, "user.create", name, 409, lambda identity: identity.create_user(name, role, password))


def set_role(store: MetadataStore, caller: Principal, name: str, role: Role) -> User:
    """Their keys and sessions carry the new role within the auth cache time."""
    _need_admin(store, caller, "user.set_role", name)
    _not_yourself(store, caller, "user.set_role", name, role != Role.admin)
    return _change(store, caller, "user.set_role", name, 404, lambda identity: identity.set_role(name, role))


def set_disabled(store: MetadataStore, caller: Principal, name: str, disabled: bool) -> User:
    """Disabling stops a user: their keys stop working and their sessions end."""
    action = "user.disable" if disabled else "user.enable"
    _need_admin(store, caller, action, name)
    _not_yourself(store, caller, action, name, disabled)
    return _change(store, caller, action, name, 404, lambda identity: identity.set_disabled(name, disabled))


def _not_yourself(store: MetadataStore, caller: Principal, action: str, name: str, locks_out: bool) -> None:
    """An admin does not demote or disable themselves here: the last admin would lock everyone out
    of user management (the CLI on the server can still do it)."""
    if locks_out and name == caller.user:
        reason = f"{caller.user} may not demote or disable themselves; another admin (or `augment users`) can"
        record(store, caller.label, action, name, "refused", reason)
        raise ActionRefused(409, reason)


def _change(store: MetadataStore, caller: Principal, action: str, name: str, refused_status: int,
            change: Callable[[Identity], User]) -> User:
    """Make a change and audit it, whatever the outcome. An unknown user is 404, any other
    refusal `refused_status`."""
    try:
        user = change(Identity(store))
    except IdentityError as exc:
        record(store, caller.label, action, name, "refused", str(exc))
        raise ActionRefused(404 if str(exc).startswith("no user") else refused_status, str(exc)) from None
    state = "disabled" if user.disabled else "enabled"
    record(store, caller.label, action, user.name, detail=f"role {user.role.value}, {state}")
    return user


def list_keys(store: MetadataStore, caller: Principal, user: str | None = None) -> list[ApiKey]:
    """Admins: every key (or one user's). Others: their own."""
    if not is_admin(caller):
        if user not in (None, caller.user):
            raise ActionRefused(403, "only admins list other users' keys")
        user = caller.user
    return Identity(store).list_keys(user)


def create_key(store: MetadataStore, caller: Principal, name: str, user: str | None = None, days: int | None = None,
               rate_per_minute: int | None = None, daily_spend_usd: float | None = None) -> tuple[ApiKey, str]:
    """A new key for `user` (default: the caller): its listing and its secret, shown this once."""
    owner = user or caller.user
    refusal = None if is_admin(caller) else _self_service_refusal(caller, owner, rate_per_minute, daily_spend_usd)
    if refusal:
        record(store, caller.label, "key.create", f"for {owner}", "refused", refusal)
        raise ActionRefused(403, refusal)
    expires = utcnow() + dt.timedelta(days=days) if days else None
    try:
        key, secret = Identity(store).create_key(owner, name, expires, rate_per_minute, daily_spend_usd)
    except IdentityError as exc:
        record(store, caller.label, "key.create", f"for {owner}", "refused", str(exc))
        raise ActionRefused(404 if str(exc).startswith("no user") else 409, str(exc)) from None
    record(store, caller.label, "key.create", key.prefix,
           detail=_described(key.user, key.name, key.rate_per_minute, key.daily_spend_usd))
    return key, secret


def revoke_key(store: MetadataStore, caller: Principal, prefix: str) -> ApiKey:
    """Stops a key on every replica within the auth cache time. Revoking it again changes nothing."""
    identity = Identity(store)
    try:
        if not is_admin(caller) and identity.get_key(prefix).user != caller.user:
            raise IdentityError(f"no key {prefix!r}")  # not one of theirs: as if it did not exist
        key = identity.revoke_key(prefix)
    except IdentityError as exc:
        record(store, caller.label, "key.revoke", prefix, "refused", str(exc))
        raise ActionRefused(404, str(exc)) from None
    record(store, caller.label, "key.revoke", key.prefix, detail=f"of {key.user}")
    return key


def _self_service_refusal(caller: Principal, owner: str, rate: int | None, spend: float | None) -> str | None:
    if owner != caller.user:
        return "only admins create keys for other users"
    if caller.via != "session":
        return "create your own keys signed in (a session), not with a key: a leaked key must not mint more"
    if rate is not None or spend is not None:
        return "only admins set a key's own rate or daily spend cap"
    return None


def _described(user: str, name: str, rate: int | None, spend: float | None) -> str:
    limits = "".join([f", {rate}/min" if rate is not None else "", f", {spend:g} USD/day" if spend is not None else ""])
    return f"for {user}: {name}{limits}"
