"""`create_app`: the API's FastAPI application, built inside each replica."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from augment_core.settings import Settings
from pipelines.catalog import WorkflowCatalog
from serve_apps.api_v1 import health, runs, workflows
from serve_apps.api_v1.errors import install_error_handlers


def create_app(settings: Settings, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="augment API",
        summary="Augment records online with a workflow's validation and augmenters; read runs.",
        version="1",
        max_body_size=max_body_bytes,
    )
    app.state.settings = settings
    app.state.catalog = WorkflowCatalog(settings.workflows_dir)
    v1 = APIRouter(prefix="/v1")
    for module in (health, workflows, runs):
        v1.include_router(module.router)
    app.include_router(v1)
    install_error_handlers(app)
    return app
