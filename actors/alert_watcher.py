"""The alert watcher: one detached actor per metadata store on a cluster that judges the alert
rules (augment_core/alerts.py) and fires, resolves and delivers alerts.

Two threads. One consumes the event bus as group `alerts` (a restart takes up where the last one
acked, so no run.finished is missed): a finished run is judged for run_failed, quarantine_share
and budget_share, and step.progress marks a run as moving. The other, every
`alert_interval_seconds`, judges what only time shows: runs without progress, spend of running
runs, provider limiters (429 share, circuit), and consumer lag (the bus's groups and the groups of
running stream runs); it also sweeps recently ended runs whose run.finished never came (a reaped
run). Each rule with a `webhook_env` has its alerts POSTed, firing and resolved, to the URL in
that variable, through the same address guard as provider calls.

It is started, like the reaper, by whatever starts runs, streams, the API or the runs panel
(`ensure_watchers`), and restarted when its node goes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import ray
import redis
from ray.actor import ActorHandle

from actors.cluster_gauges import ClusterGauges
from actors.detached import ensure_detached
from actors.naming import alert_watcher_name
from actors.provider_limiter import limiter_snapshots
from actors.reaper import ensure_reaper, store_key
from augment_core.alerts import (
    KINDS,
    Alert,
    AlertRule,
    AlertStore,
    Finding,
    judge_budget,
    judge_finished_run,
    judge_lags,
    judge_limiter,
    judge_stalled,
)
from augment_core.errors import describe_error
from augment_core.events import Event, open_bus
from augment_core.settings import Settings
from augment_core.store import FINAL_STATUSES, RunRecord, open_store, utcnow
from pipelines.inference.safe_transport import RefusedAddress, guarded_client

GROUP = "alerts"
CONSUMER = "watcher"
MAX_EVENT_AGE = dt.timedelta(hours=24)  # older run.finished events (a group made afresh) are not judged
SWEEP_WINDOW = dt.timedelta(hours=1)  # ended runs the timer looks at, for the ones without run.finished
WEBHOOK_TIMEOUT_SECONDS = 5.0
log = logging.getLogger(__name__)
Snapshots = Callable[[], list[dict[str, Any]]]


class AlertWatcher:
    def __init__(self, settings: Settings, *, snapshots: Snapshots = limiter_snapshots,
                 environ: Mapping[str, str] | None = None, group: str = GROUP, start: bool = True) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.alerts = AlertStore(self.store)
        self.bus = open_bus(settings)
        self.snapshots = snapshots
        self.environ = os.environ if environ is None else environ
        self.group = group
        self.last_progress: dict[str, dt.datetime] = {}
        self.gauges = ClusterGauges(self.store, self.bus)
        self._outage = Outages()
        self._stop = threading.Event()
        if start:
            threading.Thread(target=self._follow, name="alerts-events", daemon=True).start()
            threading.Thread(target=self._timer, name="alerts-timer", daemon=True).start()

    def close(self) -> None:
        self._stop.set()

    def consume(self, max_events: int | None = None, idle_seconds: float = 0) -> int:
        """Judge the bus's events as the group's consumer (the thread; tests call it with bounds)."""
        # A new group starts at the bus's end: runs that ended before the watcher's time are the
        # sweep's (the last hour), not a replay of the whole history.
        return self.bus.consume(self.group, CONSUMER, self.handle, stop=self._stop, max_events=max_events,
                                idle_seconds=idle_seconds, new_group_at_end=True)

    def handle(self, event: Event) -> None:
        at = dt.datetime.fromisoformat(event.at)
        if event.type in ("run.started", "step.progress"):
            self.last_progress[event.run_id] = max(at, self.last_progress.get(event.run_id, at))
        elif event.type == "run.finished":
            self.last_progress.pop(event.run_id, None)
            if utcnow() - at > MAX_EVENT_AGE:
                return
            try:
                run = self.store.get_run(event.run_id)
            except KeyError:  # a run of another store publishing to the same Redis
                return
            self.apply(judge_finished_run(run, self.alerts.rules(enabled_only=True)))

    def tick(self, now: dt.datetime | None = None) -> None:
        """One pass of the time-based rules, and the sweep of ended runs."""
        now = now or utcnow()
        rules = self.alerts.rules(enabled_only=True)
        if not rules:
            return
        of_kind = {kind: [r for r in rules if r.kind == kind] for kind in KINDS}
        findings: list[Finding] = []
        running = self.store.list_runs(limit=1000, status="running")
        for run in running:
            for rule in of_kind["run_stalled"]:
                findings += judge_stalled(run, self._last_progress_of(run), now, rule)
            for rule in of_kind["budget_share"]:
                findings += judge_budget(run, rule)
        live = {run.id for run in running}  # what a run that vanished without run.finished left is dropped
        self.last_progress = {k: v for k, v in self.last_progress.items() if k in live or now - v < SWEEP_WINDOW}
        unknown: set[str] = set()  # subjects that could not be judged now: their alerts stand
        unread: set[str] = set()  # kinds that could not be judged at all now: theirs stand too
        if of_kind["rate_429"] or of_kind["circuit_open"]:
            snapshots = self._snapshots()
            if snapshots is None:
                unread |= {"rate_429", "circuit_open"}
            for snapshot in snapshots or []:
                if "error" in snapshot:
                    unknown.add(f"provider {snapshot.get('account')}")
                for rule in of_kind["rate_429"] + of_kind["circuit_open"]:
                    findings += judge_limiter(snapshot, rule)
        if of_kind["consumer_lag"]:
            lags = self._lags(running)
            for rule in of_kind["consumer_lag"]:
                findings += judge_lags(lags, rule)
        self.apply(findings)
        # A subject no longer there (the run ended, the limiter went) clears its alert.
        judged = {(f.rule.id, f.subject) for f in findings} | {(r.id, s) for r in rules for s in unknown}
        for rule in rules:
            if KINDS[rule.kind].clears and rule.kind not in unread:
                assert rule.id is not None
                for alert in self.alerts.firing(rule.id):
                    if (rule.id, alert.subject) not in judged:
                        self._resolved(rule, self.alerts.resolve(rule.id, alert.subject))
        self._sweep(rules, now)

    def apply(self, findings: list[Finding], *, once: bool = False) -> None:
        for finding in findings:
            if finding.firing:
                alert = self.alerts.fire(finding.rule, finding.subject, finding.message, finding.value,
                                         finding.run_id, once=once)
                if alert is not None:
                    log.warning("alert %s fired: %s", finding.rule.name, finding.message)
                    self.deliver(finding.rule, alert)
            else:
                assert finding.rule.id is not None
                self._resolved(finding.rule, self.alerts.resolve(finding.rule.id, finding.subject))

    def deliver(self, rule: AlertRule, alert: Alert) -> str | None:
        return deliver(self.settings, rule, alert, self.environ)

    # ---------------------------------------------------------------------------------------------
    def _resolved(self, rule: AlertRule, alert: Alert | None) -> None:
        if alert is not None:
            log.warning("alert %s resolved: %s", rule.name, alert.subject)
            self.deliver(rule, alert)

    def _sweep(self, rules: list[AlertRule], now: dt.datetime) -> None:
        """Judge once the runs that ended lately (a reaped run sends no run.finished)."""
        finished_kinds = [r for r in rules if r.kind in ("run_failed", "quarantine_share")]
        if not finished_kinds:
            return
        for run in self.store.list_runs(limit=200, since=now - SWEEP_WINDOW):
            if run.status in FINAL_STATUSES:
                self.apply([f for f in judge_finished_run(run, finished_kinds) if f.firing], once=True)

    def _last_progress_of(self, run: RunRecord) -> dt.datetime:
        """When the run last moved: from the events seen, else (a watcher started after the run)
        from its own events on the bus, else when it started."""
        if run.id not in self.last_progress:
            last = run.started_at or run.created_at
            after = 0
            while events := self.bus.read(run.id, after=after, limit=1000):
                for event in events:
                    if event.type in ("run.started", "step.progress"):
                        last = max(last, dt.datetime.fromisoformat(event.at))
                after = events[-1].seq
            self.last_progress[run.id] = last
        return self.last_progress[run.id]

    def _snapshots(self) -> list[dict[str, Any]] | None:
        """The limiters' snapshots; None when they cannot be listed (judged next time)."""
        try:
            found = self.snapshots()
        except Exception as exc:  # noqa: BLE001 - the cluster's actor list is unreachable
            self._outage.began("reading the provider limiters", exc)
            return None
        self._outage.clear("reading the provider limiters")
        return found

    def _lags(self, running: list[RunRecord]) -> dict[str, int]:
        """How far behind each consumer group is: the event bus's, and each running stream run's."""
        lags = {f"events group {name}": lag for name, lag in self.bus.group_lags().items()}
        streams = [(run, (run.spec or {}).get("source") or {}) for run in running]
        streams = [(run, source) for run, source in streams if source.get("kind") == "redis_stream"]
        if streams and self.settings.redis_url:
            client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, decode_responses=True)
            try:
                for run, source in streams:
                    for group in client.xinfo_groups(source["stream"]):
                        if group["name"] == source["group"]:
                            lags[f"stream {source['stream']}/{source['group']} (run {run.id})"] = (
                                int(group.get("lag") or 0) + int(group.get("pending") or 0))
            except redis.RedisError as exc:
                log.warning("alerts: stream lag unreadable: %s", describe_error(exc))
            finally:
                client.close()
        return lags

    def _follow(self) -> None:
        """Consume while there are rules to judge. Without any, the bus is left alone (on the
        database backend a consumer writes as it polls); the group keeps its place meanwhile."""
        while not self._stop.is_set():
            try:
                if self.alerts.rules(enabled_only=True):
                    self.consume(idle_seconds=self.settings.alert_interval_seconds)
                    continue
                self._outage.clear("the rules")
            except Exception as exc:  # noqa: BLE001 - the store is down: look again later
                self._outage.began("the rules", exc)
            self._stop.wait(self.settings.alert_interval_seconds)

    def update_gauges(self, now: dt.datetime | None = None) -> None:
        """The cluster's gauges, from the reads the rules judge (actors/cluster_gauges.py)."""
        now = now or utcnow()
        self.gauges.update(self.store.list_runs(limit=1000, status="running"), now)

    def _timer(self) -> None:
        while not self._stop.wait(self.settings.alert_interval_seconds):
            try:
                self.update_gauges()
                self._outage.clear("the gauges")
            except Exception as exc:  # noqa: BLE001 - the store or Redis is down: the next pass tries again
                self._outage.began("the gauges", exc)
            try:
                self.tick()
                self._outage.clear("a pass")
            except Exception as exc:  # noqa: BLE001 - the store or Redis is down: the next pass tries again
                self._outage.began("a pass", exc)


class Outages:
    """Says once when something starts failing and once when it works again, not every interval
    (as the reaper does): a store down for an hour is two lines in the log, not a thousand."""

    def __init__(self) -> None:
        self._failing: set[str] = set()

    def began(self, what: str, exc: BaseException) -> None:
        if what not in self._failing:
            log.warning("alerts: %s failed, and will be tried again every interval: %s", what, describe_error(exc))
        self._failing.add(what)

    def clear(self, what: str) -> None:
        if what in self._failing:
            log.warning("alerts: %s works again", what)
        self._failing.discard(what)


def deliver(settings: Settings, rule: AlertRule, alert: Alert, environ: Mapping[str, str] | None = None) -> str | None:
    """POST the alert to the rule's webhook (the URL in its variable, read from `environ`, this
    process's own by default), and keep what came of it on the alert."""
    if not rule.webhook_env:
        return None
    url = (os.environ if environ is None else environ).get(rule.webhook_env, "")
    if not url:
        outcome = f"not sent: {rule.webhook_env} is not set on the cluster"
    else:
        outcome = post_webhook(url, webhook_payload(alert), settings.webhook_allow_list)
    outcome = f"{alert.state}: {outcome}"
    AlertStore(open_store(settings)).record_delivery(alert.id, outcome)
    return outcome


def webhook_payload(alert: Alert) -> dict[str, Any]:
    return {"alert": alert.id, "state": alert.state, "rule": alert.rule, "kind": alert.kind,
            "subject": alert.subject, "run_id": alert.run_id, "message": alert.message, "value": alert.value,
            "fired_at": alert.fired_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None}


def post_webhook(url: str, payload: dict[str, Any], allow_hosts: list[str]) -> str:
    """POST the payload; what happened, in words that never repeat the URL's path or query (a
    webhook's URL often carries its token)."""
    parts = httpx.URL(url) if url.startswith(("http://", "https://")) else None
    if parts is None or not parts.host:
        return "not sent: the webhook variable does not hold an http(s) URL"
    host = parts.host

    async def post() -> httpx.Response:
        async with guarded_client(allow_hosts) as client:
            return await client.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)

    try:
        response = asyncio.run(post())
    except RefusedAddress as exc:
        return f"refused: {host} is {exc.why}; list it in AUGMENT_ALERT_WEBHOOK_ALLOW_HOSTS to allow it"
    except httpx.HTTPError as exc:
        return f"failed: {host} did not answer ({type(exc).__name__})"
    if response.is_success:
        return f"sent: {host} answered {response.status_code}"
    return f"failed: {host} answered {response.status_code}"


# Restarted when it dies (its node went): it takes up the group's events where they were acked.
AlertWatcherActor = ray.remote(num_cpus=0, max_restarts=-1)(AlertWatcher)


def ensure_alert_watcher(settings: Settings) -> ActorHandle:
    """The alert watcher of this metadata store on this cluster, started if there is none."""
    return ensure_detached(AlertWatcherActor, alert_watcher_name(store_key(settings.database_url)), settings)


def ensure_watchers(settings: Settings) -> None:
    """The cluster's keepers of this store: the reaper and the alert watcher."""
    ensure_reaper(settings)
    ensure_alert_watcher(settings)
