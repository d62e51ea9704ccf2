"""The alert watcher driven in-process (no Ray): each rule fired from real events on a real bus
and runs in a real store, resolved when its condition clears; a restart takes up the consumer
group where it stood; webhooks go out through the address guard and never show their URL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.alert_watcher import AlertWatcher, post_webhook
from augment_core.alerts import Alert, AlertRule, AlertStore
from augment_core.events import open_bus
from augment_core.settings import Settings
from augment_core.store import open_store, utcnow
from tests.integration.private_services import WebhookReceiver, free_port


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}", redis_url=None,
                    alert_webhook_allow_hosts="127.0.0.1")


class Hook(WebhookReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/hooks/T0KEN-s3cret?sig=abc"


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


def watcher_of(settings: Settings, snapshots: list[dict[str, Any]] | None = None,
               environ: dict[str, str] | None = None, group: str = "alerts") -> AlertWatcher:
    watcher = AlertWatcher(settings, snapshots=lambda: snapshots or [], environ=environ or {}, group=group,
                           start=False)
    watcher.consume(idle_seconds=0.1)  # its group starts at the bus's end, as the watcher's thread does
    return watcher


def rule(settings: Settings, **fields: Any) -> AlertRule:
    return AlertStore(open_store(settings)).save_rule(AlertRule(name=fields.pop("name", fields["kind"]), **fields),
                                                      by="ana (session)")


def running(settings: Settings, workflow: str = "orgs", **fields: Any) -> str:
    run_id = f"r-{uuid.uuid4().hex[:8]}"
    store = open_store(settings)
    store.create_run(run_id, workflow, 1, "w.yaml", ["validate", "write"])
    assert store.mark_running(run_id)
    if fields:
        store.update_run(run_id, **fields)
    open_bus(settings).publish(run_id, "run.started", {"workflow": workflow})
    return run_id


def finish(settings: Settings, run_id: str, status: str, **fields: Any) -> None:
    open_store(settings).finish_run(run_id, status, **fields)
    open_bus(settings).publish(run_id, "run.finished", {"status": status})


def firing(settings: Settings) -> list[Alert]:
    return AlertStore(open_store(settings)).firing()


def test_a_failed_run_fires_from_its_run_finished_event_and_a_resume_to_success_resolves_it(
        settings: Settings, hook: Hook) -> None:
    failed = rule(settings, kind="run_failed", workflow="orgs", webhook_env="AUGMENT_ALERT_WEBHOOK_OPS")
    watcher = watcher_of(settings, environ={"AUGMENT_ALERT_WEBHOOK_OPS": hook.url})
    run_id = running(settings)
    other = running(settings, workflow="other")  # the rule names one workflow
    finish(settings, run_id, "failed", error="step company_name: 20 of 20 records failed\nTraceback...")
    finish(settings, other, "failed", error="boom")
    watcher.consume(idle_seconds=0.5)
    [alert] = firing(settings)
    assert (alert.rule, alert.subject, alert.run_id) == ("run_failed", f"run {run_id}", run_id)
    assert alert.message == f"run {run_id} of orgs failed: step company_name: 20 of 20 records failed"
    assert alert.delivery == "firing: sent: 127.0.0.1 answered 204"
    assert "T0KEN" not in alert.delivery and hook.received[0]["path"] == "/hooks/T0KEN-s3cret?sig=abc"
    assert hook.received[0]["body"]["state"] == "firing" and hook.received[0]["body"]["rule"] == "run_failed"

    store = open_store(settings)  # resumed, the same run succeeds
    store.engine.dispose()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?", (run_id,))
    finish(settings, run_id, "succeeded")
    watcher.consume(idle_seconds=0.5)
    assert firing(settings) == []
    resolved = AlertStore(store).get(alert.id)
    assert resolved is not None and (resolved.state, resolved.resolved_by) == ("resolved", "the condition cleared")
    assert [r["body"]["state"] for r in hook.received] == ["firing", "resolved"]
    assert failed.id == resolved.rule_id


def test_a_restarted_watcher_takes_up_the_events_where_the_group_stood(settings: Settings) -> None:
    rule(settings, kind="run_failed")
    first = watcher_of(settings)
    one = running(settings)
    finish(settings, one, "failed", error="one")
    assert first.consume(idle_seconds=0.5) == 2
    first.close()
    two = running(settings)  # while no watcher runs
    finish(settings, two, "failed", error="two")
    watcher_of(settings).consume(idle_seconds=0.5)  # the next one, same group
    assert sorted(a.run_id or "" for a in firing(settings)) == sorted([one, two])


def test_a_run_without_progress_for_its_minutes_fires_and_clears_when_it_moves_or_ends(settings: Settings) -> None:
    rule(settings, kind="run_stalled", minutes=10)
    watcher = watcher_of(settings)
    run_id = running(settings)
    watcher.consume(idle_seconds=0.5)
    start = utcnow()
    watcher.tick(start + dt.timedelta(minutes=5))
    assert firing(settings) == []
    watcher.tick(start + dt.timedelta(minutes=11))
    [alert] = firing(settings)
    assert alert.subject == f"run {run_id}" and "made no progress for 11" in alert.message
    open_bus(settings).publish(run_id, "step.progress", {"steps": {"validate": {"state": "running", "rows": 10}}})
    watcher.consume(idle_seconds=0.5)
    watcher.tick(utcnow() + dt.timedelta(minutes=1))
    assert firing(settings) == []

    # a watcher that starts after the run reads the run's own events to know when it last moved
    fresh = watcher_of(settings, group="late")
    fresh.tick(utcnow() + dt.timedelta(minutes=3))
    assert firing(settings) == []
    fresh.tick(utcnow() + dt.timedelta(minutes=12))
    assert len(firing(settings)) == 1
    finish(settings, run_id, "cancelled")
    fresh.tick(utcnow() + dt.timedelta(minutes=13))  # no longer running: cleared
    assert firing(settings) == []


def test_a_run_past_its_budget_share_fires_while_it_runs_and_keeps_its_alert_when_it_ends(
        settings: Settings) -> None:
    rule(settings, kind="budget_share", threshold=0.8)
    watcher = watcher_of(settings)
    run_id = running(settings, cost={"total_usd": 0.5, "budget_usd": 1.0})
    unbudgeted = running(settings, cost={"total_usd": 5.0, "budget_usd": None})
    watcher.tick()
    assert firing(settings) == []
    open_store(settings).update_run(run_id, cost={"total_usd": 0.85, "budget_usd": 1.0})
    watcher.tick()
    [alert] = firing(settings)
    assert (alert.value, alert.run_id) == (0.85, run_id)
    assert "spent $0.8500 of its $1.00 budget (85%, threshold 80%)" in alert.message
    finish(settings, run_id, "succeeded", cost={"total_usd": 0.9, "budget_usd": 1.0})
    finish(settings, unbudgeted, "succeeded")
    watcher.consume(idle_seconds=0.5)
    watcher.tick()
    assert [a.id for a in firing(settings)] == [alert.id]  # what was spent stands


def test_a_finished_run_above_its_quarantine_share_fires_once(settings: Settings) -> None:
    rule(settings, kind="quarantine_share", threshold=0.05)
    watcher = watcher_of(settings)
    clean, dirty = running(settings), running(settings)
    finish(settings, clean, "succeeded", counts={"in": 300, "valid": 290, "quarantined": 10})
    finish(settings, dirty, "succeeded", counts={"in": 300, "valid": 277, "quarantined": 23})
    watcher.consume(idle_seconds=0.5)
    [alert] = firing(settings)
    assert alert.run_id == dirty and "quarantined 23 of 300 records (7.7%, above 5.0%)" in alert.message
    AlertStore(open_store(settings)).resolve_by_hand(alert.id, "ana (session)")
    watcher.tick()  # the sweep of ended runs does not bring it back
    assert firing(settings) == []


def test_a_reaped_run_that_sent_no_run_finished_is_caught_by_the_sweep(settings: Settings) -> None:
    rule(settings, kind="run_failed")
    run_id = running(settings)
    open_store(settings).finish_run(run_id, "failed", error="driver lost: no heartbeat for more than 30s")
    watcher = watcher_of(settings)
    watcher.tick()
    [alert] = firing(settings)
    assert alert.run_id == run_id and "driver lost" in alert.message


def test_a_provider_account_above_its_429_share_or_with_an_open_circuit_fires_and_clears(settings: Settings) -> None:
    rule(settings, kind="rate_429", threshold=0.2)
    rule(settings, kind="circuit_open")
    snapshots: list[dict[str, Any]] = [
        {"account": "acme", "recent": {"answered": 70, "rate_limited": 30, "failures": 0}, "circuit": "closed"},
        {"account": "calm", "recent": {"answered": 100, "rate_limited": 1, "failures": 0}, "circuit": "closed"},
        {"account": "down", "recent": {"answered": 0, "rate_limited": 0, "failures": 9}, "circuit": "open",
         "consecutive_failures": 9},
    ]
    watcher = watcher_of(settings, snapshots)
    watcher.tick()
    found = {(a.rule, a.subject): a for a in firing(settings)}
    assert set(found) == {("rate_429", "provider acme"), ("circuit_open", "provider down")}
    assert "30 of 100 replies in the last 5 minutes were 429 (30%, threshold 20%)" in found[
        ("rate_429", "provider acme")].message
    snapshots[0]["recent"] = {"answered": 100, "rate_limited": 0, "failures": 0}
    snapshots[2] = {"account": "down", "error": "GetTimeoutError"}  # did not answer: its alert stands
    watcher.tick()
    assert [(a.rule, a.subject) for a in firing(settings)] == [("circuit_open", "provider down")]
    watcher.snapshots = lambda: (_ for _ in ()).throw(ConnectionError("no cluster"))  # no limiter readable
    watcher.tick()
    assert [(a.rule, a.subject) for a in firing(settings)] == [("circuit_open", "provider down")]
    watcher.snapshots = lambda: snapshots
    snapshots[2] = {"account": "down", "recent": {}, "circuit": "half-open"}
    watcher.tick()
    assert firing(settings) == []


def test_a_consumer_group_behind_by_its_threshold_fires_and_clears_once_it_caught_up(settings: Settings) -> None:
    rule(settings, kind="consumer_lag", threshold=5)
    bus = open_bus(settings)
    laggard = watcher_of(settings, group="exports")  # another group, as a webhook relay would be
    laggard.consume(max_events=1, idle_seconds=0.5)  # the group exists, then falls behind
    for n in range(6):
        bus.publish("lagging", "step.progress", {"n": n})
    watcher = watcher_of(settings)
    watcher.tick()
    alerts = {a.subject: a for a in firing(settings)}
    assert set(alerts) == {"events group exports"} and alerts["events group exports"].value == 6
    laggard.consume(idle_seconds=0.5)
    watcher.tick()
    assert firing(settings) == []


def test_group_lags_on_redis_count_undelivered_and_unacked(settings: Settings, redis_url: str) -> None:
    on_redis = settings.model_copy(update={"redis_url": redis_url})
    group = f"lag-{uuid.uuid4().hex[:6]}"
    bus = open_bus(on_redis)
    bus.publish("lag-run", "step.progress", {})  # the stream exists
    watcher_of(on_redis, group=group).consume(idle_seconds=0.5)  # every earlier event, handled
    for _ in range(3):
        bus.publish("lag-run", "step.progress", {})
    assert bus.group_lags()[group] == 3


def test_a_webhook_is_refused_a_private_address_unless_allowed_and_never_shows_its_url(
        settings: Settings, hook: Hook) -> None:
    refused = post_webhook(hook.url, {"x": 1}, allow_hosts=[])
    assert refused.startswith("refused: 127.0.0.1 is a loopback address")
    assert "AUGMENT_ALERT_WEBHOOK_ALLOW_HOSTS" in refused and hook.received == []
    assert post_webhook("ftp://host/x", {}, []) == "not sent: the webhook variable does not hold an http(s) URL"
    port = free_port()
    down = post_webhook(f"http://127.0.0.1:{port}/T0KEN", {}, ["127.0.0.1"])
    assert down == "failed: 127.0.0.1 did not answer (ConnectError)"

    rule(settings, kind="run_failed", webhook_env="AUGMENT_ALERT_WEBHOOK_UNSET")
    watcher = watcher_of(settings)
    run_id = running(settings)
    finish(settings, run_id, "failed", error="x")
    watcher.consume(idle_seconds=0.5)
    [alert] = firing(settings)
    assert alert.delivery == "firing: not sent: AUGMENT_ALERT_WEBHOOK_UNSET is not set on the cluster"


def test_a_store_down_for_many_passes_is_said_once_and_once_more_when_it_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    from actors.alert_watcher import Outages

    outages = Outages()
    with caplog.at_level("WARNING", logger="actors.alert_watcher"):
        for _ in range(5):
            outages.began("a pass", ConnectionError("refused"))
        outages.clear("a pass")
        outages.clear("a pass")
    assert [r.getMessage() for r in caplog.records] == [
        "alerts: a pass failed, and will be tried again every interval: ConnectionError: refused",
        "alerts: a pass works again"]
