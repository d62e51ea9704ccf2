"""`create_app`: the API's FastAPI application, built inside each replica."""

from __future__ import annotations

from collections.abc import Callable

import ray
from fastapi import APIRouter, FastAPI

from actors.provider_limiter import cluster_permits
from augment_core.settings import Settings
from pipelines.inference.context import RunContext
from pipelines.inference.permits import local_permits
from pipelines.review.decisions import DecisionLookup
from pipelines.spec.workflow import WorkflowSpec
from pipelines.workflows.folder import WorkflowFolder
from serve_apps.api_v1 import datasets, health, reviews, runs, workflows
from serve_apps.api_v1.errors import install_error_handlers


def online_context(settings: Settings) -> Callable[[WorkflowSpec], RunContext]:
    """Online calls share the cluster-wide provider limiters with batch runs (when this process
    is part of a cluster), ahead of their calls, and the result cache. No budget: budgets bound
    runs, not requests."""
    def context_for(spec: WorkflowSpec) -> RunContext:
        permits = cluster_permits if ray.is_initialized() else local_permits
        return RunContext(providers=spec.providers, settings=settings, permits_for=permits,
                          decisions=DecisionLookup(settings, spec.name), interactive=True)

    return context_for


def create_app(settings: Settings, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="augment API",
        summary="Augment records online with a workflow's validation and augmenters; read runs.",
        version="1",
        max_body_size=max_body_bytes,
    )
    app.state.settings = settings
    app.state.workflows = WorkflowFolder(settings.workflows_dir, context_for=online_context(settings))
    v1 = APIRouter(prefix="/v1")
    for module in (health, workflows, runs, datasets, reviews):
        v1.include_router(module.router)
    app.include_router(v1)
    install_error_handlers(app)
    return app
