"""The admin panel: users (create, set the role, disable and enable), API keys (create, shown once
with a copy button; list; revoke) and the audit log with filters, paged back.

Built from functions the panel's application hands in (`AdminAccess`: the gateway's own functions,
which the API's /v1/users, /v1/keys and /v1/audit call too), so it knows nothing of Serve, Ray or
the store. Every change is made as the signed-in user; a refusal (a taken name, a password too
short, an admin disabling themselves) is shown as the error it is, and a failure to load is an
error beside the last data that did load.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from augment_core.audit import AuditEntry
from augment_core.identity import ApiKey, Role, User

USER_COLUMNS = ["name", "role", "state", "signs in with", "created (UTC)"]
KEY_COLUMNS = ["prefix", "name", "owner", "state", "created (UTC)", "last used (UTC)", "expires (UTC)",
               "own rate /min", "own spend cap /day"]
AUDIT_COLUMNS = ["id", "at (UTC)", "who", "action", "target", "outcome", "detail"]
ROLES = [r.value for r in Role]
ANY_ACTION = "any action"
# Actions the audit log holds (augment_core/audit.record's callers); the filter takes others typed in.
ACTIONS = [ANY_ACTION, "login", "access.denied", "user.create", "user.set_role", "user.set_password", "user.disable",
           "user.enable", "key.create", "key.revoke", "run.start", "run.launch", "run.cancel", "run.resume",
           "workflow.save", "alert_rule.save", "alert_rule.delete", "alert.resolve", "review.accept", "review.edit",
           "review.reject", "review.rerun", "dataset.promote"]
SINCE = {"any time": None, "last hour": dt.timedelta(hours=1), "last 24 hours": dt.timedelta(days=1),
         "last 7 days": dt.timedelta(days=7), "last 30 days": dt.timedelta(days=30)}
AUDIT_PAGE = 100


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None  # entries whose actor starts so
    action: str | None = None
    since: dt.datetime | None = None
    before_id: int | None = None  # paging back: entries older than this one


@dataclass(frozen=True)
class AdminAccess:
    """What the panel reads and does; changes take the signed-in user's name first and raise an
    exception whose message says why they were refused."""

    users: Callable[[], list[User]]
    create_user: Callable[[str, str, Role, str | None], User]  # (caller, name, role, password or None)
    set_role: Callable[[str, str, Role], User]  # (caller, name, role)
    set_disabled: Callable[[str, str, bool], User]  # (caller, name, disabled)
    keys: Callable[[], list[ApiKey]]
    # (caller, owner, name, days, rate per minute, daily spend) -> (the key, its secret)
    create_key: Callable[[str, str, str, int | None, int | None, float | None], tuple[ApiKey, str]]
    revoke_key: Callable[[str, str], ApiKey]  # (caller, prefix)
    audit: Callable[[AuditFilter, int], list[AuditEntry]]  # (filter, limit), newest first


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _failed(what: str, exc: Exception) -> str:
    return f"⚠️ **{what}**: {getattr(exc, 'message', None) or exc}"


def _text(value: str | None) -> str:
    return (value or "").strip()


def _whole(value: float | None, what: str, low: int, high: int) -> int | None:
    """An optional whole number field: empty (or 0, as Gradio sends an emptied one) means none."""
    if value is None or pd.isna(value) or value == 0:
        return None
    if value != int(value) or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low:,} to {high:,}")
    return int(value)


# users ----------------------------------------------------------------------------------------
def users_table(users: list[User]) -> pd.DataFrame:
    rows = [[u.name, u.role.value, "⚠ disabled" if u.disabled else "enabled",
             "password and keys" if u.has_password else "API keys only", _when(u.created_at)] for u in users]
    return pd.DataFrame(rows, columns=USER_COLUMNS)


def users_view(access: AdminAccess) -> tuple[str, Any, Any, Any]:
    """(status, table, user choices, key owner choices); on failure all but the status stay."""
    try:
        users = access.users()
    except Exception as exc:
        return _failed("Could not read the users", exc), gr.skip(), gr.skip(), gr.skip()
    disabled = sum(u.disabled for u in users)
    admins = sum(u.role == Role.admin and not u.disabled for u in users)
    status = f"{len(users)} user(s) · {admins} admin(s)" + (f" · {disabled} disabled" if disabled else "")
    names = [u.name for u in users]
    owners = [u.name for u in users if not u.disabled]
    return status, users_table(users), gr.update(choices=names), gr.update(choices=owners)


def create_user_view(access: AdminAccess, caller: str, name: str | None, role: str | None,
                     password: str | None) -> str:
    name = _text(name)
    if not name:
        return "⚠️ Type the new user's name."
    try:
        user = access.create_user(caller, name, Role(role or Role.viewer), password or None)
    except Exception as exc:  # a taken name, a short password, a name with spaces
        return _failed(f"{name} was not created", exc)
    how = "signs in with the password given" if user.has_password else "has no password: API keys only"
    return f"✓ User **{user.name}** created, role **{user.role.value}**; {how}."


def set_role_view(access: AdminAccess, caller: str, name: str | None, role: str | None) -> str:
    if not name:
        return "⚠️ Choose a user first."
    if not role:
        return "⚠️ Choose the new role."
    try:
        user = access.set_role(caller, name, Role(role))
    except Exception as exc:
        return _failed(f"The role of {name} was not changed", exc)
    return f"✓ **{user.name}** is now **{user.role.value}** (their sessions and keys within a few seconds)."


def ask_disable_view(name: str | None) -> tuple[Any, str, str | None]:
    """The confirmation row, its question, and whom it is about."""
    if not name:
        return gr.update(visible=False), "", None
    return (gr.update(visible=True), f"Disable **{name}**? Their sessions end and their API keys stop working "
                                     "at once, until an admin enables them again.", name)


def set_disabled_view(access: AdminAccess, caller: str, name: str | None, disabled: bool) -> str:
    if not name:
        return "⚠️ Choose a user first."
    try:
        user = access.set_disabled(caller, name, disabled)
    except Exception as exc:
        return _failed(f"{name} was not {'disabled' if disabled else 'enabled'}", exc)
    if user.disabled:
        return f"✓ **{user.name}** is disabled: signed out everywhere, keys refused."
    return f"✓ **{user.name}** is enabled again (their keys that are not revoked work again)."


# keys -----------------------------------------------------------------------------------------
def _limit(value: float | int | None, unit: str) -> str:
    return "" if value is None else f"{value:g} {unit}"


def keys_table(keys: list[ApiKey]) -> pd.DataFrame:
    order = {"active": 0, "expired": 1, "revoked": 2}
    ordered = sorted(keys, key=lambda k: (order[k.state], -k.created_at.timestamp()))
    rows = [[k.prefix, k.name, k.user, k.state if k.state == "active" else f"⚠ {k.state}", _when(k.created_at),
             _when(k.last_used_at) or "never", _when(k.expires_at) or "never",
             _limit(k.rate_per_minute, "req"), _limit(k.daily_spend_usd, "USD")] for k in ordered]
    return pd.DataFrame(rows, columns=KEY_COLUMNS)


def keys_view(access: AdminAccess) -> tuple[str, Any, Any]:
    """(status, table, choices of keys to revoke); on failure the table and choices stay."""
    try:
        keys = access.keys()
    except Exception as exc:
        return _failed("Could not read the API keys", exc), gr.skip(), gr.skip()
    active = [k for k in keys if k.state == "active"]
    status = f"{len(keys)} key(s) · {len(active)} active"
    choices = [(f"{k.prefix} · {k.name} ({k.user})", k.prefix) for k in active]
    return status, keys_table(keys), gr.update(choices=choices)


def spend_cap(value: str | None) -> float | None:
    """A daily spend cap as typed: empty is the gateway's default; 0 is a real cap (no provider spend)."""
    text = _text(value).removeprefix("$").strip()
    if not text:
        return None
    try:
        cap = float(text)
    except ValueError:
        raise ValueError(f"the daily spend cap must be a number of USD, not {text!r}") from None
    if not 0 <= cap <= 1_000_000:
        raise ValueError("the daily spend cap must be from 0 to 1,000,000 USD")
    return cap


def create_key_view(access: AdminAccess, caller: str, owner: str | None, name: str | None, days: float | None,
                    rate: float | None, spend: str | None) -> tuple[str, Any]:
    """(outcome, the secret's box): the secret is shown here once and kept nowhere."""
    hidden = gr.update(visible=False, value="")
    name = _text(name)
    if not owner:
        return "⚠️ Choose whose key it is.", hidden
    if not name:
        return "⚠️ Name the key after what it is for (e.g. 'crm sync').", hidden
    try:
        key, secret = access.create_key(caller, owner, name, _whole(days, "days", 1, 3650),
                                        _whole(rate, "the rate", 1, 1_000_000), spend_cap(spend))
    except Exception as exc:  # a disabled owner, a bad number
        return _failed("The key was not created", exc), hidden
    expiry = f"expires {_when(key.expires_at)} UTC" if key.expires_at else "never expires"
    return (f"✓ Key **{key.prefix}** ({key.name}) created for **{key.user}**; {expiry}. Copy it now: it is "
            "shown this once, and only its hash is kept.", gr.update(visible=True, value=secret))


def ask_revoke_view(prefix: str | None) -> tuple[Any, str, str | None]:
    if not prefix:
        return gr.update(visible=False), "", None
    return gr.update(visible=True), f"Revoke **{prefix}**? Programs using it are refused (401) within seconds.", prefix


def revoke_view(access: AdminAccess, caller: str, prefix: str | None) -> str:
    if not prefix:
        return "⚠️ Choose a key first."
    try:
        key = access.revoke_key(caller, prefix)
    except Exception as exc:
        return _failed(f"{prefix} was not revoked", exc)
    return f"✓ Key **{key.prefix}** ({key.name}, of {key.user}) revoked at {_when(key.revoked_at)} UTC."


# audit log ------------------------------------------------------------------------------------
def audit_filter(actor: str | None, action: str | None, since: str | None,
                 now: dt.datetime | None = None) -> AuditFilter:
    span = SINCE.get(since or "any time")
    start = (now or dt.datetime.now(dt.timezone.utc)) - span if span else None
    chosen = _text(action)
    return AuditFilter(actor=_text(actor) or None, action=None if chosen in ("", ANY_ACTION) else chosen, since=start)


def audit_table(entries: list[AuditEntry]) -> pd.DataFrame:
    rows = [[e.id, _when(e.at), e.actor, e.action, e.target, e.outcome if e.outcome == "ok" else f"⚠ {e.outcome}",
             e.detail or ""] for e in entries]
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def audit_view(access: AdminAccess, actor: str | None, action: str | None, since: str | None,
               before_id: int | None = None) -> tuple[str, Any, int | None]:
    """(status, table, the oldest id shown: where "Older" goes on); on failure the table stays."""
    wanted = audit_filter(actor, action, since)
    try:
        entries = access.audit(AuditFilter(wanted.actor, wanted.action, wanted.since, before_id), AUDIT_PAGE)
    except Exception as exc:
        return _failed("Could not read the audit log", exc), gr.skip(), before_id
    refused = sum(e.outcome != "ok" for e in entries)
    where = f"older than entry {before_id}" if before_id else "newest first"
    if not entries:
        return f"No entries match ({where}).", audit_table([]), before_id
    status = (f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({where})"
              + (f" · ⚠ {refused} refused or failed" if refused else "")
              + (" · more with **Older**" if len(entries) == AUDIT_PAGE else ""))
    return status, audit_table(entries), entries[-1].id


# the page -------------------------------------------------------------------------------------
def confirm_row(yes: str, name: str) -> tuple[gr.Row, gr.Markdown, gr.Button, gr.Button]:
    """A hidden row that asks before a change: (the row, its question, yes, no); ids `<name>-confirm…`."""
    with gr.Row(visible=False, elem_id=f"{name}-confirm") as row:
        question = gr.Markdown("")
        agreed = gr.Button(yes, variant="stop", scale=0, elem_id=f"{name}-confirm-yes")
        refused = gr.Button("No", scale=0, elem_id=f"{name}-confirm-no")
    return row, question, agreed, refused


def build_admin_panel(access: AdminAccess) -> gr.Blocks:
    """The panel's Blocks: three tabs, each read when the page loads."""
    with gr.Blocks(title="augment · admin") as panel:
        with gr.Tabs():
            with gr.Tab("Users", id="users", elem_id="tab-users"):
                users_status = gr.Markdown("Loading users…", elem_id="users-status")
                users = gr.Dataframe(headers=USER_COLUMNS, interactive=False, elem_id="users-table", max_height=360,
                                     label="Users")
                with gr.Group():
                    gr.Markdown("**New user**", padding=True)
                    with gr.Row(equal_height=True):
                        new_name = gr.Textbox(label="Name", placeholder="ana@example.com", elem_id="new-user-name",
                                              scale=2)
                        new_role = gr.Dropdown(label="Role", choices=ROLES, value=Role.viewer.value,
                                               elem_id="new-user-role", scale=1)
                        new_password = gr.Textbox(label="Password (at least 8 characters; empty: API keys only)",
                                                  type="password", elem_id="new-user-password", scale=2)
                        create_user_button = gr.Button("Create user", variant="primary", scale=0,
                                                       elem_id="create-user")
                with gr.Group():
                    gr.Markdown("**Change a user**", padding=True)
                    with gr.Row(equal_height=True):
                        chosen_user = gr.Dropdown(label="User", choices=[], value=None, elem_id="user-choice", scale=2)
                        chosen_role = gr.Dropdown(label="New role", choices=ROLES, value=None, elem_id="user-role",
                                                  scale=1)
                        set_role_button = gr.Button("Set role", scale=0, elem_id="user-set-role")
                        disable_button = gr.Button("Disable…", variant="stop", scale=0, elem_id="user-disable")
                        enable_button = gr.Button("Enable", scale=0, elem_id="user-enable")
                user_confirm, user_question, user_yes, user_no = confirm_row("Yes, disable", "user")
                user_pending = gr.State(None)
                user_outcome = gr.Markdown("", elem_id="user-outcome")
            with gr.Tab("API keys", id="keys", elem_id="tab-keys"):
                keys_status = gr.Markdown("Loading keys…", elem_id="keys-status")
                keys = gr.Dataframe(headers=KEY_COLUMNS, interactive=False, elem_id="keys-table", max_height=360,
                                    label="API keys (active first; the secret is never listed)", wrap=True)
                with gr.Group():
                    gr.Markdown("**New key**", padding=True)
                    with gr.Row(equal_height=True):
                        owner = gr.Dropdown(label="For user", choices=[], value=None, elem_id="key-owner", scale=2)
                        key_name = gr.Textbox(label="What it is for", placeholder="crm sync", elem_id="key-name",
                                              scale=2)
                        # An emptied number field reads 0 in Gradio, so 0 is "none" for these two.
                        days = gr.Number(label="Expires after days (0: never)", value=0, precision=0, minimum=0,
                                         maximum=3650, elem_id="key-days", scale=1)
                        rate = gr.Number(label="Own rate /min (0: the default)", value=0, precision=0, minimum=0,
                                         elem_id="key-rate", scale=1)
                        spend = gr.Textbox(label="Own spend cap, USD/day (empty: the default)", placeholder="e.g. 5",
                                           elem_id="key-spend", scale=1)
                        create_key_button = gr.Button("Create key", variant="primary", scale=0, elem_id="create-key")
                key_outcome = gr.Markdown("", elem_id="key-outcome")
                secret = gr.Textbox(label="The new key (shown this once)", interactive=False, visible=False,
                                    buttons=["copy"], elem_id="key-secret")
                with gr.Row(equal_height=True):
                    revoke_choice = gr.Dropdown(label="Active key", choices=[], value=None, elem_id="revoke-choice",
                                                scale=3)
                    revoke_button = gr.Button("Revoke…", variant="stop", scale=0, elem_id="key-revoke")
                key_confirm, key_question, key_yes, key_no = confirm_row("Yes, revoke", "key")
                key_pending = gr.State(None)
                revoke_outcome = gr.Markdown("", elem_id="revoke-outcome")
            with gr.Tab("Audit log", id="audit", elem_id="tab-audit") as audit_tab:
                with gr.Row(equal_height=True):
                    who = gr.Textbox(label="Who (starts with)", placeholder="ana", elem_id="audit-who", scale=2)
                    action = gr.Dropdown(label="Action", choices=ACTIONS, value=ANY_ACTION, allow_custom_value=True,
                                         elem_id="audit-action", scale=2)
                    since = gr.Dropdown(label="When", choices=list(SINCE), value="last 7 days", elem_id="audit-since",
                                        scale=1)
                    newest_button = gr.Button("Newest", scale=0, elem_id="audit-newest")
                    older_button = gr.Button("Older", scale=0, elem_id="audit-older")
                audit_status = gr.Markdown("Loading the audit log…", elem_id="audit-status")
                audit = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, elem_id="audit-table", max_height=480,
                                     wrap=True, label="Audit log", column_widths=["6%", "13%", "15%", "11%", "17%",
                                                                                  "9%", "29%"])
                oldest = gr.State(None)  # the oldest entry shown: "Older" pages back from it

        user_listing = [users_status, users, chosen_user, owner]
        key_listing = [keys_status, keys, revoke_choice]
        audit_filters = [who, action, since]
        audit_listing = [audit_status, audit, oldest]

        # Closures, not partials: Gradio hands gr.Request only to a parameter it can see.
        def read_users() -> tuple[str, Any, Any, Any]:
            return users_view(access)

        def read_keys() -> tuple[str, Any, Any]:
            return keys_view(access)

        def read_audit(actor: str | None, action: str | None, since: str | None) -> tuple[str, Any, int | None]:
            return audit_view(access, actor, action, since)

        def read_older(actor: str | None, action: str | None, since: str | None,
                       before: int | None) -> tuple[str, Any, int | None]:
            return audit_view(access, actor, action, since, before)

        def create_user(name: str | None, role: str | None, password: str | None,
                        request: gr.Request) -> tuple[str, str]:
            outcome = create_user_view(access, request.username or "", name, role, password)
            return outcome, "" if outcome.startswith("✓") else gr.skip()  # the password is not kept on the page

        def set_role(name: str | None, role: str | None, request: gr.Request) -> str:
            return set_role_view(access, request.username or "", name, role)

        def disable(name: str | None, request: gr.Request) -> tuple[Any, str]:
            return gr.update(visible=False), set_disabled_view(access, request.username or "", name, True)

        def enable(name: str | None, request: gr.Request) -> str:
            return set_disabled_view(access, request.username or "", name, False)

        def create_key(owner: str | None, name: str | None, days: float | None, rate: float | None,
                       spend: str | None, request: gr.Request) -> tuple[str, Any]:
            return create_key_view(access, request.username or "", owner, name, days, rate, spend)

        def revoke(prefix: str | None, request: gr.Request) -> tuple[Any, str]:
            return gr.update(visible=False), revoke_view(access, request.username or "", prefix)

        panel.load(read_users, None, user_listing, api_name="list_users")
        panel.load(read_keys, None, key_listing, api_name="list_keys")
        panel.load(read_audit, audit_filters, audit_listing, api_name="audit_log")

        create_user_button.click(create_user, [new_name, new_role, new_password], [user_outcome, new_password],
                                 api_name="create_user").then(read_users, None, user_listing, show_progress="hidden")
        set_role_button.click(set_role, [chosen_user, chosen_role], user_outcome, api_name="set_role").then(
            read_users, None, user_listing, show_progress="hidden")
        disable_button.click(ask_disable_view, chosen_user, [user_confirm, user_question, user_pending],
                             api_visibility="private")
        user_yes.click(disable, user_pending, [user_confirm, user_outcome], api_name="disable_user").then(
            read_users, None, user_listing, show_progress="hidden").then(read_keys, None, key_listing,
                                                                         show_progress="hidden")
        user_no.click(lambda: (gr.update(visible=False), None), None, [user_confirm, user_pending],
                      api_visibility="private")
        enable_button.click(enable, chosen_user, user_outcome, api_name="enable_user").then(
            read_users, None, user_listing, show_progress="hidden")

        create_key_button.click(create_key, [owner, key_name, days, rate, spend], [key_outcome, secret],
                                api_name="create_key").then(read_keys, None, key_listing, show_progress="hidden")
        revoke_button.click(ask_revoke_view, revoke_choice, [key_confirm, key_question, key_pending],
                            api_visibility="private")
        key_yes.click(revoke, key_pending, [key_confirm, revoke_outcome], api_name="revoke_key").then(
            read_keys, None, key_listing, show_progress="hidden")
        key_no.click(lambda: (gr.update(visible=False), None), None, [key_confirm, key_pending],
                     api_visibility="private")

        # Opening the tab reads it again: what was just done on the other tabs is in it.
        for trigger in (who.submit, action.input, since.input, newest_button.click, audit_tab.select):
            trigger(read_audit, audit_filters, audit_listing, api_visibility="private")
        older_button.click(read_older, [*audit_filters, oldest], audit_listing, api_visibility="private")
    return panel
