"""Dependencies of the routes: the replica's settings, metadata store and workflow folder."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from augment_core.settings import Settings
from augment_core.store import MetadataStore, open_store
from pipelines.workflows.folder import WorkflowFolder


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_workflows(request: Request) -> WorkflowFolder:
    return request.app.state.workflows


SettingsDep = Annotated[Settings, Depends(get_settings)]
WorkflowsDep = Annotated[WorkflowFolder, Depends(get_workflows)]


def get_store(settings: SettingsDep) -> MetadataStore:
    """Opened on first use, so a replica starts (and reports the outage) while the store is down."""
    return open_store(settings)


StoreDep = Annotated[MetadataStore, Depends(get_store)]
