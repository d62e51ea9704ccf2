"""Dependencies of the routes: the replica's settings, metadata store and workflow folder."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from augment_core.settings import Settings
from augment_core.store import MetadataStore, open_store
from pipelines.workflows.folder import WorkflowFolder


# async: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost more than reading
# an attribute (docs/benchmarks.md, "Speed round, part 3").
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_workflows(request: Request) -> WorkflowFolder:
    return request.app.state.workflows


SettingsDep = Annotated[Settings, Depends(get_settings)]
WorkflowsDep = Annotated[WorkflowFolder, Depends(get_workflows)]


def get_store(settings: SettingsDep) -> MetadataStore:
    """Opened on first use, so a replica starts (and reports the outage) while the store is down."""
    return open_store(settings)


StoreDep = Annotated[MetadataStore, Depends(get_store)]
