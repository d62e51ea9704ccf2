"""GET /v1/health: is the API able to serve, and is its metadata store answering?"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.exc import SQLAlchemyError

from augment_core.store import open_store
from serve_apps.api_v1.deps import SettingsDep, WorkflowsDep
from serve_apps.api_v1.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(settings: SettingsDep, workflows: WorkflowsDep, response: Response) -> Health:
    try:
        open_store(settings).list_runs(limit=1)  # a real query on the runs table
        store = "ok"
    except SQLAlchemyError as exc:
        store = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    try:
        count: int | None = len(workflows.entries())
    except OSError:
        count = None
    if store != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if store == "ok" else "unavailable", store=store, workflows=count)
