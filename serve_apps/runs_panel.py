"""The `runs` Serve application: the runs panel (ui.runs) on the panel framework
(serve_apps/gateway/panels.py: its manifest for the shell, the gateway, the navigation bar)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import gradio as gr
from pydantic import Field
from ray import serve
from ray.serve import Application, Deployment

from actors.alert_watcher import deliver, ensure_watchers
from actors.provider_limiter import limiter_snapshots
from actors.runs import read_run
from augment_core.alerts import Alert, AlertRule, AlertStore
from augment_core.audit import record
from augment_core.events import Event, follow_run
from augment_core.identity import Identity, Role
from augment_core.storage import StoragePaths
from augment_core.store import RunRecord, open_store, utcnow
from pipelines.io.parquet import first_rows
from pipelines.operations.provider_usage import usage_by_account
from serve_apps import run_actions
from serve_apps.gateway.panels import PanelApp, PanelArgs
from serve_apps.gateway.redact import event_without_paths, run_without_paths
from ui.alerts import AlertAccess
from ui.runs import RunActions, RunFilter, build_runs_panel


class RunsPanelArgs(PanelArgs):
    limit: int = Field(default=100, ge=1, le=1000, description="Runs listed, newest first.")
    refresh_seconds: float = Field(default=5.0, ge=1, le=300)


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class RunsPanel(PanelApp):
    title = "Runs"
    role = Role.viewer
    views = {"alerts": "?view=alerts"}  # the shell's bar links its alert count there

    def __init__(self, args: RunsPanelArgs) -> None:
        super().__init__(args)
        self.limit = args.limit
        self.refresh_seconds = args.refresh_seconds
        self.launched = run_actions.LaunchedRuns()
        # What this app reads of runs is true only while someone fails the runs whose driver died:
        # the cluster's reaper, started here too for a cluster where no run was launched since it came up.
        ensure_watchers(self.settings)

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
        """Cancel and resume, and changing alert rules, are the operator's, as on the API; the
        role as stored now."""
        found = Identity(open_store(self.settings)).get_user(user)
        return not found.disabled and found.role.allows(Role.operator)

    def cancel(self, run_id: str, user: str) -> RunRecord:
        return self._shown(run_actions.cancel(self.settings, open_store(self.settings), f"{user} (session)", run_id))

    def resume(self, run_id: str, user: str) -> RunRecord:
        store = open_store(self.settings)
        return self._shown(run_actions.resume(self.settings, store, f"{user} (session)", run_id, self.launched))

    def alerts(self) -> AlertStore:
        return AlertStore(open_store(self.settings))

    def save_rule(self, rule: AlertRule, user: str) -> AlertRule:
        saved = self.alerts().save_rule(rule, f"{user} (session)")
        record(open_store(self.settings), f"{user} (session)", "alert_rule.save", saved.name,
               detail=f"{saved.kind}, {'enabled' if saved.enabled else 'disabled'}")
        return saved

    def delete_rule(self, name: str, user: str) -> bool:
        deleted = self.alerts().delete_rule(name)
        record(open_store(self.settings), f"{user} (session)", "alert_rule.delete", name,
               "ok" if deleted else "refused", detail=None if deleted else "no such rule")
        return deleted

    def resolve_alert(self, alert_id: int, user: str) -> Alert:
        """Marked resolved by hand; its rule's webhook hears it, as it hears the watcher's."""
        alert = self.alerts().resolve_by_hand(alert_id, f"{user} (session)")
        record(open_store(self.settings), f"{user} (session)", "alert.resolve", f"alert {alert_id}")
        rule = self.alerts().rule(alert.rule_id)
        if rule is not None:
            deliver(self.settings, rule, alert)
        return alert

    def quarantine(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        """The first quarantined rows of the run: its recorded quarantine folder, or where a
        running run writes it."""
        run = open_store(self.settings).get_run(run_id)
        paths = StoragePaths(self.settings)
        where = run.output.get("quarantine_path") or paths.quarantine(run.dataset, run.id)
        fs, path = paths.filesystem(where)
        return first_rows(fs, path, limit)

    def output(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        """The first rows of the run's output: its recorded folder, or where a running run
        writes it (whole files only)."""
        run = open_store(self.settings).get_run(run_id)
        paths = StoragePaths(self.settings)
        fs, path = paths.filesystem(run.output.get("path") or paths.dataset_run(run.dataset, run.id))
        return first_rows(fs, path, limit)

    def provider_health(self) -> list[dict[str, Any]]:
        """Each account's limiter now, with what runs created today (UTC) did with it."""
        snapshots = limiter_snapshots()
        midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        usage = usage_by_account(open_store(self.settings).list_runs(limit=1000, since=midnight))
        today = {account: {"calls": u.calls, "cache_hits": u.cache_hits, "hit_rate": u.hit_rate,
                           "cost_usd": round(u.cost_usd, 6), "runs": sorted(u.runs)} for account, u in usage.items()}
        for snapshot in snapshots:
            snapshot["today"] = today.pop(str(snapshot.get("account")), None)
        return snapshots + [{"account": account, "today": used} for account, used in sorted(today.items())]

    def health(self) -> str:
        open_store(self.settings).list_runs(limit=1)  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        actions = RunActions(cancel=self.cancel, resume=self.resume, may_act=self.may_act)
        alerts = AlertAccess(recent=lambda: self.alerts().recent(), rules=lambda: self.alerts().rules(),
                             save_rule=self.save_rule, delete_rule=self.delete_rule, resolve=self.resolve_alert,
                             may_edit=self.may_act)
        return build_runs_panel(self.list_runs, self.get_run, self.follow, actions, self.provider_health, alerts,
                                self.quarantine, self.output, refresh_seconds=self.refresh_seconds)


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, RunsPanel).bind(RunsPanelArgs.model_validate(args))
