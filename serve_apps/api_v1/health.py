"""GET /v1/health: is the API able to serve, and is its metadata store answering? The one route
open to anyone (load balancers, liveness probes), so it says no more than that: no driver errors,
host names or counts."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy.exc import SQLAlchemyError

from augment_core.store import describe_db_error, open_store
from serve_apps.api_v1.deps import SettingsDep
from serve_apps.api_v1.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(settings: SettingsDep, response: Response) -> Health:
    try:
        open_store(settings).list_runs(limit=1)  # a real query on the runs table
        return Health(status="ok", store="ok")
    except SQLAlchemyError as exc:
        log.warning("health: metadata store unavailable: %s", describe_db_error(exc))  # the reason stays in the log
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", store="unavailable")
