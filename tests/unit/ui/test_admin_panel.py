"""The admin panel: users created, changed, disabled and enabled; keys created (the secret shown
once and working), revoked (and then refused); the audit log filtered and paged back — all through
the same functions as the API, so refusals are the API's and every attempt is audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import gradio as gr
import pytest

from augment_core.audit import list_entries
from augment_core.identity import Identity, Role
from augment_core.settings import Settings
from augment_core.store import open_store
from serve_apps.admin_panel import admin_access
from ui.admin import (
    AdminAccess,
    audit_filter,
    audit_view,
    build_admin_panel,
    create_key_view,
    create_user_view,
    keys_view,
    revoke_view,
    set_disabled_view,
    set_role_view,
    users_view,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'augment.db'}", storage_root=str(tmp_path / "data"),
                        workflows_dir=str(tmp_path))
    Identity(open_store(settings)).create_user("root", Role.admin, "a long password")
    return settings


def audited(settings: Settings, action: str) -> list[tuple[str, str, str, str | None]]:
    return [(e.actor, e.target, e.outcome, e.detail) for e in list_entries(open_store(settings), action=action)]


def test_an_admin_creates_changes_disables_and_enables_users_and_refusals_say_why(settings: Settings) -> None:
    panel = admin_access(settings)
    assert create_user_view(panel, "root", "ana", "operator", "short") == (
        "⚠️ **ana was not created**: a password needs at least 8 characters")
    assert create_user_view(panel, "root", "ana", "operator", "a long password") == (
        "✓ User **ana** created, role **operator**; signs in with the password given.")
    assert create_user_view(panel, "root", "bot", "viewer", "").endswith("has no password: API keys only.")
    assert "already exists" in create_user_view(panel, "root", "ana", "viewer", None)
    assert "use 1-100 letters" in create_user_view(panel, "root", "a b", "viewer", None)
    assert create_user_view(panel, "root", "  ", "viewer", None) == "⚠️ Type the new user's name."

    assert set_role_view(panel, "root", "ana", "admin").startswith("✓ **ana** is now **admin**")
    assert "may not demote or disable themselves" in set_role_view(panel, "root", "root", "viewer")
    assert "may not demote or disable themselves" in set_disabled_view(panel, "root", "root", True)
    assert set_disabled_view(panel, "root", "bot", True).startswith("✓ **bot** is disabled")
    assert "no user 'ghost'" in set_disabled_view(panel, "root", "ghost", True)

    status, table, names, owners = users_view(panel)
    assert status == "3 user(s) · 2 admin(s) · 1 disabled"
    assert table.values.tolist()[1][:4] == ["bot", "viewer", "⚠ disabled", "API keys only"]
    assert names["choices"] == ["ana", "bot", "root"] and owners["choices"] == ["ana", "root"]
    assert set_disabled_view(panel, "root", "bot", False).startswith("✓ **bot** is enabled again")
    # Every attempt is in the audit log as the session's user, refused ones with why; no password.
    creates = audited(settings, "user.create")
    assert [(a, t, o) for a, t, o, _ in creates] == [
        ("root (session)", "a b", "refused"), ("root (session)", "ana", "refused"), ("root (session)", "bot", "ok"),
        ("root (session)", "ana", "ok"), ("root (session)", "ana", "refused")]
    assert not any("long password" in str(e.detail) for e in list_entries(open_store(settings)))


def test_a_caller_who_lost_the_admin_role_is_refused_as_the_store_says_now(settings: Settings) -> None:
    panel = admin_access(settings)
    Identity(open_store(settings)).create_user("olga", Role.operator, None)
    assert create_user_view(panel, "olga", "x", "admin", None) == (
        "⚠️ **x was not created**: user.create needs the admin role; olga is operator")
    key, _ = Identity(open_store(settings)).create_key("root", "root's")
    assert f"no key '{key.prefix}'" in revoke_view(panel, "olga", key.prefix)  # not hers: as if it did not exist
    assert audited(settings, "user.create")[0][:3] == ("olga (session)", "x", "refused")
    assert [u.name for u in Identity(open_store(settings)).list_users()] == ["olga", "root"]


def test_a_key_is_shown_once_works_and_once_revoked_is_refused(settings: Settings) -> None:
    panel, identity = admin_access(settings), Identity(open_store(settings))
    identity.create_user("crm", Role.operator, None)
    assert create_key_view(panel, "root", "crm", "", None, None, None)[0].startswith("⚠️ Name the key")
    assert create_key_view(panel, "root", None, "sync", None, None, None)[0] == "⚠️ Choose whose key it is."
    refused, box = create_key_view(panel, "root", "crm", "sync", 1.5, 0, "")
    assert refused == "⚠️ **The key was not created**: days must be a whole number from 1 to 3,650"
    assert box["visible"] is False
    assert "must be a number of USD, not 'lots'" in create_key_view(panel, "root", "crm", "x", 0, 0, "lots")[0]
    assert "from 0 to 1,000,000 USD" in create_key_view(panel, "root", "crm", "x", 0, 0, "-1")[0]
    free = create_key_view(panel, "root", "crm", "no spend", 0, 0, "0")[1]["value"]
    assert Identity(open_store(settings)).resolve_key(free).daily_spend_usd == 0.0  # type: ignore[union-attr]
    outcome, box = create_key_view(panel, "root", "crm", "crm sync", 30, 120, "$5")
    secret = box["value"]
    assert box["visible"] is True and outcome.startswith("✓ Key **aug_") and "shown this once" in outcome
    principal = identity.resolve_key(secret)
    assert principal is not None and (principal.user, principal.rate_per_minute, principal.daily_spend_usd) == (
        "crm", 120, 5.0)
    status, table, choices = keys_view(panel)
    prefix = principal.key_prefix
    assert status == "2 key(s) · 2 active" and (f"{prefix} · crm sync (crm)", prefix) in choices["choices"]
    assert table.values.tolist()[0][:4] == [prefix, "crm sync", "crm", "active"]  # the newest first
    expires, own_rate, own_spend = table.values.tolist()[0][6:]
    assert (own_rate, own_spend) == ("120 req", "5 USD") and expires != "never"
    assert secret not in str(table.values.tolist()) and secret not in str(list_entries(open_store(settings)))
    assert revoke_view(panel, "root", prefix).startswith(f"✓ Key **{prefix}** (crm sync, of crm) revoked")
    assert identity.resolve_key(secret) is None
    status, table, choices = keys_view(panel)
    assert status == "2 key(s) · 1 active" and table.values[-1][3] == "⚠ revoked" and len(choices["choices"]) == 1
    assert "no key 'aug_ffffffff'" in revoke_view(panel, "root", "aug_ffffffff")
    # A disabled user gets no new key.
    identity.set_disabled("crm", True)
    assert "is disabled" in create_key_view(panel, "root", "crm", "again", 0, 0, "")[0]


def test_the_audit_log_is_filtered_by_who_action_and_time_and_pages_back(settings: Settings) -> None:
    panel = admin_access(settings)
    for n in range(105):
        create_user_view(panel, "root", f"u{n:03d}", "viewer", None)
    set_role_view(panel, "root", "u000", "operator")
    status, table, oldest = audit_view(panel, None, None, "last hour")
    assert status == "100 entries (newest first) · more with **Older**" and len(table) == 100
    assert table.values[0][3] == "user.set_role" and oldest is not None
    status, table, older = audit_view(panel, None, None, "last hour", oldest)
    assert status == f"6 entries (older than entry {oldest})" and table.values[-1][4] == "u000"
    status, table, _ = audit_view(panel, "root", "user.set_role", "any time")
    assert status == "1 entry (newest first)" and table.values[0][2] == "root (session)"
    assert audit_view(panel, "nobody", None, "any time")[0] == "No entries match (newest first)."
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    assert audit_filter(None, "any action", "last hour", now=later).action is None
    assert panel.audit(audit_filter(None, None, "last hour", now=later), 10) == []
    create_user_view(panel, "root", "u000", "viewer", None)
    status, table, _ = audit_view(panel, None, "user.create", "last hour")
    assert "⚠ 1 refused or failed" in status and table.values[0][5] == "⚠ refused"


def test_a_failure_to_read_is_an_error_beside_the_last_data(settings: Settings) -> None:
    def down(*_: object) -> list[object]:
        raise ConnectionError("the metadata store does not answer")

    broken = AdminAccess(users=down, create_user=down, set_role=down, set_disabled=down, keys=down,  # type: ignore[arg-type]
                         create_key=down, revoke_key=down, audit=down)  # type: ignore[arg-type]
    status, *rest = users_view(broken)
    assert status == "⚠️ **Could not read the users**: the metadata store does not answer"
    assert all(isinstance(r, type(gr.skip())) for r in rest)
    assert keys_view(broken)[0].startswith("⚠️ **Could not read the API keys**")
    status, table, oldest = audit_view(broken, None, None, "any time", 42)
    assert status.startswith("⚠️ **Could not read the audit log**") and oldest == 42


def test_the_panel_names_its_endpoints_for_gradio_client(settings: Settings) -> None:
    blocks = build_admin_panel(admin_access(settings))
    names = {fn.api_name for fn in blocks.fns.values() if fn.api_name}
    assert {"list_users", "create_user", "set_role", "disable_user", "enable_user", "list_keys", "create_key",
            "revoke_key", "audit_log"} <= names
