"""The `runs` Serve application: the runs panel (ui.runs) mounted on FastAPI inside the replica.

Gradio's app must be created in the replica, after the constructor, so that its lifespan (which
starts the queue) runs there: `__serve_build_asgi_app__` is Serve's hook for that. One replica
only: Gradio's queue state is per process and Serve routes without session affinity. Only
signed-in viewers (and above) get in: the gateway's PageGuard, and Gradio's auth_dependency.
"""

from __future__ import annotations

from typing import Any, cast

import gradio as gr
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application, Deployment

from actors.runs import read_run
from augment_core.identity import Role
from augment_core.settings import Settings
from augment_core.store import RunRecord, open_store
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.pages import HostCheck, PageGuard, gradio_user
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

    def list_runs(self) -> list[RunRecord]:
        store = open_store(self.settings)
        store.reap_stale_runs(self.settings.stale_after_seconds)
        return store.list_runs(limit=self.args.limit)

    def get_run(self, run_id: str) -> RunRecord:
        return read_run(self.settings, run_id)

    def __serve_build_asgi_app__(self) -> FastAPI:
        blocks = build_runs_panel(self.list_runs, self.get_run, refresh_seconds=self.args.refresh_seconds)
        app = gr.mount_gradio_app(FastAPI(), blocks, path="/", auth_dependency=gradio_user)
        app.add_middleware(PageGuard, gate=Gate(self.settings), prefix=self.args.prefix, role=Role.viewer)
        app.add_middleware(HostCheck, settings=self.settings)
        return app


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, RunsPanel).bind(RunsPanelArgs.model_validate(args))
