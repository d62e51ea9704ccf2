"""GET /v1/audit (admin): the audit log, newest first, filtered and paged back by id."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from augment_core.audit import list_entries
from serve_apps.api_v1.deps import StoreDep
from serve_apps.api_v1.schemas import AuditEntryOut
from serve_apps.gateway.api_auth import Admin

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntryOut])
def audit_log(
    _: Admin,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Entries older than this one.")] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Entries whose actor starts so.")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. run.cancel, review.accept, key.revoke")]
    = None,
    since: Annotated[dt.datetime | None, Query(description="Entries at or after this time (ISO 8601, with a zone).")]
    = None,
) -> list[AuditEntryOut]:
    if since is not None and since.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "since needs a time zone, e.g. 2026-12-01T00:00:00Z")
    return [AuditEntryOut(**e.model_dump()) for e in list_entries(store, limit=limit, before_id=before_id,
                                                                  actor=actor, action=action, since=since)]
