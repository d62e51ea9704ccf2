"""The audit log: every state-changing action — who, when, what, and how it ended.

Written by the API (through the gateway's principal) and by the CLI (as the local operating-system
user); read with `augment audit` and `GET /api/v1/audit`. Entries hold names and ids, never secrets
or record data.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel

from augment_core.store import MetadataStore, audit_table, aware, utcnow

Outcome = Literal["ok", "refused", "failed"]
DETAIL_CHARS = 500
log = logging.getLogger(__name__)


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    outcome: Outcome
    detail: str | None = None


def local_actor() -> str:
    """How the CLI names its caller: the operating-system user, who reached the store directly."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name} (local)"


def record(store: MetadataStore, actor: str, action: str, target: str, outcome: Outcome = "ok",
           detail: str | None = None) -> None:
    """Write one entry. A store that refuses it is logged, not raised: the action already happened."""
    row = {"at": utcnow(), "actor": actor[:200], "action": action[:64], "target": target[:300], "outcome": outcome,
           "detail": detail[:DETAIL_CHARS] if detail else None}
    try:
        with store.engine.begin() as conn:
            conn.execute(audit_table.insert().values(**row))
    except sa.exc.SQLAlchemyError as exc:
        log.error("audit entry not written (%s %s by %s): %s", action, target, actor, type(exc).__name__)


def list_entries(store: MetadataStore, *, limit: int = 100, before_id: int | None = None, actor: str | None = None,
                 action: str | None = None, since: dt.datetime | None = None) -> list[AuditEntry]:
    """Newest first; `before_id` pages back from an entry, `since` leaves out older ones."""
    table = audit_table
    query = table.select().order_by(table.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(table.c.id < before_id)
    if actor:
        query = query.where(table.c.actor.startswith(actor, autoescape=True))
    if action:
        query = query.where(table.c.action == action)
    if since is not None:
        query = query.where(table.c.at >= since.astimezone(dt.timezone.utc))  # as stored: UTC
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [AuditEntry(**{**r, "at": aware(r["at"])}) for r in rows]
