"""The `runs` Serve application: the runs panel (ui.runs) on the panel framework
(serve_apps/gateway/panels.py: its manifest for the shell, the gateway, the navigation bar)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import gradio as gr
from pydantic import Field
from ray import serve
from ray.serve import Application, Deployment

from actors.provider_limiter import limiter_snapshots
from actors.reaper import ensure_reaper
from actors.runs import read_run
from augment_core.events import Event, follow_run
from augment_core.identity import Identity, Role
from augment_core.store import RunRecord, open_store
from serve_apps import run_actions
from serve_apps.gateway.panels import PanelApp, PanelArgs
from serve_apps.gateway.redact import event_without_paths, run_without_paths
from ui.runs import RunActions, RunFilter, build_runs_panel


class RunsPanelArgs(PanelArgs):
    limit: int = Field(default=100, ge=1, le=1000, description="Runs listed, newest first.")
    refresh_seconds: float = Field(default=5.0, ge=1, le=300)


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class RunsPanel(PanelApp):
    title = "Runs"
    role = Role.viewer

    def __init__(self, args: RunsPanelArgs) -> None:
        super().__init__(args)
        self.limit = args.limit
        self.refresh_seconds = args.refresh_seconds
        self.launched = run_actions.LaunchedRuns()
        # What this app reads of runs is true only while someone fails the runs whose driver died:
        # the cluster's reaper, started here too for a cluster where no run was launched since it came up.
        ensure_reaper(self.settings)

    def list_runs(self, wanted: RunFilter) -> list[RunRecord]:
        # A read: runs whose driver died are failed by the cluster's reaper (actors/reaper.py).
        found = open_store(self.settings).list_runs(
            limit=self.limit, workflow=wanted.workflow, status=wanted.status, since=wanted.since)
        return [self._shown(r) for r in found]

    def follow(self, run_id: str) -> Iterator[list[Event]]:
        """The run's events as the API's event stream reads them, with server paths hidden."""
        for events in follow_run(self.settings, run_id, follow=True, block_seconds=1.0):
            yield [event_without_paths(e, self.settings.storage_root) for e in events]

    def get_run(self, run_id: str) -> RunRecord:
        return self._shown(read_run(self.settings, run_id))

    def _shown(self, record: RunRecord) -> RunRecord:
        """No server paths on a page in a browser, whatever the role (serve_apps/gateway/redact.py)."""
        return run_without_paths(record, self.settings.storage_root)

    def may_act(self, user: str) -> bool:
        """Cancel and resume are the operator's, as on the API; the role as stored now."""
        found = Identity(open_store(self.settings)).get_user(user)
        return not found.disabled and found.role.allows(Role.operator)

    def cancel(self, run_id: str, user: str) -> RunRecord:
        return self._shown(run_actions.cancel(self.settings, open_store(self.settings), f"{user} (session)", run_id))

    def resume(self, run_id: str, user: str) -> RunRecord:
        store = open_store(self.settings)
        return self._shown(run_actions.resume(self.settings, store, f"{user} (session)", run_id, self.launched))

    def health(self) -> str:
        open_store(self.settings).list_runs(limit=1)  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        actions = RunActions(cancel=self.cancel, resume=self.resume, may_act=self.may_act)
        return build_runs_panel(self.list_runs, self.get_run, self.follow, actions, limiter_snapshots,
                                refresh_seconds=self.refresh_seconds)


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, RunsPanel).bind(RunsPanelArgs.model_validate(args))
