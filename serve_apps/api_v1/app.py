"""`create_app`: the API's FastAPI application, built inside each replica."""

from __future__ import annotations

from collections.abc import Callable

import ray
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from actors.provider_limiter import cluster_permits
from augment_core.settings import Settings
from pipelines.inference.context import RunContext
from pipelines.inference.permits import local_permits
from pipelines.review.decisions import DecisionLookup
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.folder import WorkflowFolder
from serve_apps.api_v1 import audit, datasets, health, keys, launch, me, reviews, runs, users, workflows
from serve_apps.api_v1.admission import Admission
from serve_apps.api_v1.errors import install_error_handlers
from serve_apps.gateway.api_auth import Viewer, install_gateway
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.pages import HostCheck
from serve_apps.gateway.request_metrics import MeterRequests
from serve_apps.gateway.request_spans import TraceRequests
from serve_apps.gateway.spend import CurrentCallerBudget


def online_context(settings: Settings) -> Callable[[WorkflowSpec], RunContext]:
    """Online calls share the cluster-wide provider limiters with batch runs (when this process
    is part of a cluster), ahead of their calls, and the result cache. They spend from their
    caller's daily ledger (serve_apps/gateway/spend.py), not from a spec's run budget."""
    def context_for(spec: WorkflowSpec) -> RunContext:
        permits = cluster_permits if ray.is_initialized() else local_permits
        return RunContext(providers=spec.providers, settings=settings, permits_for=permits,
                          budget=CurrentCallerBudget(), decisions=DecisionLookup(settings, spec.name),
                          interactive=True)

    return context_for


def create_app(settings: Settings, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="augment API",
        summary="Augment records online with a workflow's validation and augmenters; read runs.",
        version="1",
        max_body_size=max_body_bytes,
        # Served below by routes that check the caller, like every other route but health.
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.state.settings = settings
    app.state.admission = Admission(settings.api_concurrency, settings.api_queue)
    app.state.workflows = WorkflowFolder(settings.workflows_dir, context_for=online_context(settings))
    v1 = APIRouter(prefix="/v1")
    for module in (health, me, workflows, runs, launch, datasets, reviews, audit, users, keys):
        v1.include_router(module.router)
    app.include_router(v1)
    _document(app)
    install_error_handlers(app)
    install_gateway(app, Gate(settings))
    if settings.cors_origin_list:
        # Only what a key needs: browsers never send the session cookie across sites (no credentials),
        # so a configured origin gets the API as a program with a key does, never as a signed-in user.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)
    app.add_middleware(HostCheck, settings=settings)
    app.add_middleware(MeterRequests)  # every request is counted, refused ones too
    app.add_middleware(TraceRequests)  # outermost: every request has a span, refused ones too
    return app


def _document(app: FastAPI) -> None:
    """The OpenAPI document and its reference page, for signed-in users and keys."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Viewer) -> HTMLResponse:
        # Relative to this page, so it works below any route prefix.
        return get_swagger_ui_html(openapi_url="openapi.json", title="augment API")
