"""GET /v1/me: who the API takes the caller for, and what their role allows."""

from __future__ import annotations

from fastapi import APIRouter

from serve_apps.api_v1.schemas import CallerOut
from serve_apps.gateway.api_auth import Viewer

router = APIRouter(tags=["identity"])


@router.get("/me", response_model=CallerOut)
def me(caller: Viewer) -> CallerOut:
    return CallerOut(user=caller.user, role=caller.role.value, via=caller.via, key_prefix=caller.key_prefix)
