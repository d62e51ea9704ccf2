"""The `admin` Serve application: users, API keys and the audit log (ui.admin) on the panel
framework, for admins. Every change goes through serve_apps/identity_actions.py, as the API's
/v1/users and /v1/keys do, so both check and audit it the same way; the caller is the signed-in
user as the store holds them now (a role taken away a moment ago counts)."""

from __future__ import annotations

from typing import Any, cast

import gradio as gr
from ray import serve
from ray.serve import Application, Deployment

from augment_core.audit import AuditEntry, list_entries
from augment_core.identity import Identity, Principal, Role
from augment_core.settings import Settings
from augment_core.store import MetadataStore, open_store
from serve_apps import identity_actions
from serve_apps.gateway.panels import PanelApp, PanelArgs
from ui.admin import AdminAccess, AuditFilter, build_admin_panel


def admin_access(settings: Settings) -> AdminAccess:
    """The panel's reads and changes on the store of `settings`."""
    def store() -> MetadataStore:
        return open_store(settings)

    def caller(user: str) -> Principal:
        found = Identity(store()).get_user(user)
        if found.disabled:
            raise PermissionError(f"{user} is disabled")
        return Principal(user=found.name, role=found.role, via="session")

    def audit(wanted: AuditFilter, limit: int) -> list[AuditEntry]:
        return list_entries(store(), limit=limit, before_id=wanted.before_id, actor=wanted.actor,
                            action=wanted.action, since=wanted.since)

    return AdminAccess(
        users=lambda: Identity(store()).list_users(),
        create_user=lambda by, name, role, password: identity_actions.create_user(store(), caller(by), name, role,
                                                                                  password),
        set_role=lambda by, name, role: identity_actions.set_role(store(), caller(by), name, role),
        set_disabled=lambda by, name, disabled: identity_actions.set_disabled(store(), caller(by), name, disabled),
        keys=lambda: Identity(store()).list_keys(),
        create_key=lambda by, owner, name, days, rate, spend: identity_actions.create_key(
            store(), caller(by), name, owner, days, rate, spend),
        revoke_key=lambda by, prefix: identity_actions.revoke_key(store(), caller(by), prefix),
        audit=audit,
    )


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class AdminPanel(PanelApp):
    title = "Admin"
    role = Role.admin

    def health(self) -> str:
        Identity(open_store(self.settings)).has_users()  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        return build_admin_panel(admin_access(self.settings))


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, AdminPanel).bind(PanelArgs.model_validate(args))
