"""The `runs` Serve application: the runs panel (ui.runs) mounted on FastAPI inside the replica.

Gradio's app must be created in the replica, after the constructor, so that its lifespan (which
starts the queue) runs there: `__serve_build_asgi_app__` is Serve's hook for that. One replica
only: Gradio's queue state is per process and Serve routes without session affinity. Only
signed-in viewers (and above) get in, and the page's changes carry the session's CSRF token:
`serve_apps.gateway.panels.mount_panel`, which every panel uses.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application, Deployment

from actors.reaper import ensure_reaper
from actors.runs import read_run
from augment_core.identity import Role
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from serve_apps.gateway.panels import mount_panel
from serve_apps.gateway.redact import run_without_paths
from serve_apps.shell import ROUTE_OR_EMPTY
from ui.runs import build_runs_panel


class RunsPanelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", pattern=ROUTE_OR_EMPTY, description="Set by `augment serve`: where login is.")
    limit: int = Field(default=100, ge=1, le=1000, description="Runs listed, newest first.")
    refresh_seconds: float = Field(default=5.0, ge=1, le=300)


@serve.deployment(num_replicas=1, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class RunsPanel:
    def __init__(self, args: RunsPanelArgs) -> None:
        self.args = args
        self.settings = Settings()
        # What this app reads of runs is true only while someone fails the runs whose driver died:
        # the cluster's reaper, started here too for a cluster where no run was launched since it came up.
        ensure_reaper(self.settings)

    def list_runs(self) -> list[RunRecord]:
        # A read: runs whose driver died are failed by the cluster's reaper (actors/reaper.py).
        return [self._shown(r) for r in open_store(self.settings).list_runs(limit=self.args.limit)]

    def get_run(self, run_id: str) -> RunRecord:
        return self._shown(read_run(self.settings, run_id))

    def _shown(self, record: RunRecord) -> RunRecord:
        """No server paths on a page in a browser, whatever the role (serve_apps/gateway/redact.py)."""
        return run_without_paths(record, self.settings.storage_root)

    def __serve_build_asgi_app__(self) -> FastAPI:
        blocks = build_runs_panel(self.list_runs, self.get_run, refresh_seconds=self.args.refresh_seconds)
        return mount_panel(blocks, self.settings, self.args.prefix, Role.viewer)


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, RunsPanel).bind(RunsPanelArgs.model_validate(args))
