"""What augment records as metrics (augment_core/metric_catalog.py), checked without Ray: the
recorder's `ray.util.metrics` instruments are replaced by fakes that keep every value, so each
test sees exactly what a scrape would add. The real export through Ray's agent to a real
Prometheus is tests/integration/test_prometheus.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.cluster_gauges import ClusterGauges
from actors.provider_metrics import LimiterMeter, outcome_of
from actors.run_metrics import record_finished_run
from augment_core.events import open_bus
from augment_core.identity import Principal, Role
from augment_core.ratelimit import Grant, Limits, Outcome
from augment_core.settings import Settings
from augment_core.store import open_store, utcnow
from pipelines import metrics
from serve_apps.gateway.request_metrics import caller_label

pytestmark = pytest.mark.unit
Key = tuple[str, tuple[tuple[str, str], ...]]


class Recorded:
    """name + labels -> the counter's sum, the gauge's last value, or the histogram's observations."""

    def __init__(self) -> None:
        self.values: dict[Key, Any] = {}

    def instrument(self, kind: str, name: str) -> Any:
        recorded = self

        class Fake:
            def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = (),
                         boundaries: list[float] | None = None) -> None:
                self.name, self.tag_keys = name, tag_keys

            def _key(self, tags: dict[str, str]) -> Key:
                assert set(tags) == set(self.tag_keys)
                return self.name, tuple(sorted(tags.items()))

            def inc(self, value: float, tags: dict[str, str]) -> None:
                recorded.values[self._key(tags)] = recorded.values.get(self._key(tags), 0) + value

            def set(self, value: float, tags: dict[str, str]) -> None:
                recorded.values[self._key(tags)] = value

            def observe(self, value: float, tags: dict[str, str]) -> None:
                recorded.values.setdefault(self._key(tags), []).append(value)

        return Fake

    def get(self, name: str, **labels: str) -> Any:
        return self.values.get((name, tuple(sorted(labels.items()))))

    def of(self, name: str) -> dict[tuple[tuple[str, str], ...], Any]:
        return {labels: v for (n, labels), v in self.values.items() if n == name}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    found = Recorded()
    monkeypatch.setattr(metrics, "in_cluster", lambda: True)
    for kind, cls in (("counter", "Counter"), ("gauge", "Gauge"), ("histogram", "Histogram")):
        monkeypatch.setattr(metrics.ray_metrics, cls, found.instrument(kind, cls))
    monkeypatch.setattr(metrics, "_made", {})
    yield found


def test_an_undeclared_name_or_label_is_refused() -> None:
    with pytest.raises(ValueError, match="not a counter"):
        metrics.count("augment_no_such_metric", 1, workflow="w")
    with pytest.raises(ValueError, match="not a counter"):
        metrics.count("augment_runs_running", 1, workflow="w")  # a gauge
    with pytest.raises(ValueError, match="takes the labels workflow, status"):
        metrics.count("augment_runs", 1, workflow="w", run_id="r-1")


def test_outside_a_ray_cluster_recording_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "in_cluster", lambda: False)
    monkeypatch.setattr(metrics, "_made", {})
    metrics.count("augment_runs", 1, workflow="w", status="failed")
    assert metrics._made == {}


def test_a_finished_run_adds_its_stored_counts(recorded: Recorded) -> None:
    counts = {"in": 10, "valid": 8, "quarantined": 2, "augmented": 8, "failed": 1, "skipped": 0}
    steps = [{"name": "validate", "rows": 10}, {"name": "llm", "rows": 8, "failed": 1, "skipped": 2},
             {"name": "write", "rows": 8}]
    record_finished_run("orgs", "succeeded", counts, steps, 12.5)
    record_finished_run("orgs", "failed", {"in": 5, "valid": 5}, [], None)
    assert recorded.get("augment_records", workflow="orgs", outcome="in") == 15
    assert recorded.get("augment_records", workflow="orgs", outcome="quarantined") == 2
    assert recorded.get("augment_records", workflow="orgs", outcome="skipped") is None  # 0 is not recorded
    assert recorded.of("augment_step_records") == {
        (("outcome", "ok"), ("step", "llm"), ("workflow", "orgs")): 5,
        (("outcome", "error"), ("step", "llm"), ("workflow", "orgs")): 1,
        (("outcome", "skipped"), ("step", "llm"), ("workflow", "orgs")): 2,
    }
    assert recorded.get("augment_runs", workflow="orgs", status="succeeded") == 1
    assert recorded.get("augment_runs", workflow="orgs", status="failed") == 1
    assert recorded.get("augment_run_duration_seconds", workflow="orgs", status="succeeded") == [12.5]
    assert recorded.get("augment_run_duration_seconds", workflow="orgs", status="failed") is None


def test_the_limiter_counts_each_attempt_by_its_reply(recorded: Recorded) -> None:
    meter = LimiterMeter("openai-main")
    meter.limits(Limits(requests_per_minute=600))
    meter.granted(Grant(True, permit=1, waited=0.25), "closed")
    meter.granted(Grant(False, reason="circuit open"), "open")
    for outcome in (Outcome(status=200, tokens=40, seconds=0.2), Outcome(status=429, seconds=0.01),
                    Outcome(status=500, seconds=0.3), Outcome(status=None, seconds=5.0), Outcome(sent=False)):
        meter.released(outcome, "open")
    account = "openai-main"
    assert recorded.get("augment_provider_limit_per_second", account=account) == 10
    assert recorded.get("augment_limiter_wait_seconds", account=account) == [0.25]  # refused grants waited for nothing
    assert {labels[1][1]: n for labels, n in recorded.of("augment_provider_requests").items()} == {
        "ok": 1, "rate_limited": 1, "error": 1, "no_reply": 1}  # the unsent one is no request
    assert recorded.get("augment_provider_latency_seconds", account=account) == [0.2, 0.01, 0.3, 5.0]
    assert recorded.get("augment_provider_tokens", account=account) == 40
    assert recorded.get("augment_provider_circuit_open", account=account) == 1
    meter.released(Outcome(status=200), "half-open")
    assert recorded.get("augment_provider_circuit_open", account=account) == 0
    assert outcome_of(Outcome(status=302)) == "ok"


def test_the_api_caller_label_is_a_public_prefix_never_the_key() -> None:
    key = Principal(user="ana", role=Role.operator, via="key", key_prefix="aug_1a2b3c4d")
    session = Principal(user="ana", role=Role.operator, via="session")
    assert caller_label({"state": {"principal": key}}) == "aug_1a2b3c4d"
    assert caller_label({"state": {"principal": session}}) == "session"
    assert caller_label({"state": {}}) == "anonymous"
    assert caller_label({}) == "anonymous"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_root=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'augment.db'}", redis_url=None)


def test_cluster_gauges_follow_running_runs_and_go_back_to_zero(recorded: Recorded, settings: Settings) -> None:
    store, bus = open_store(settings), open_bus(settings)
    store.create_run("r-gauge-1", "orgs", 1, "w.yaml", ["validate", "write"])
    assert store.mark_running("r-gauge-1")
    gauges = ClusterGauges(store, bus)
    started = utcnow()
    bus.publish("r-gauge-1", "run.started", {"workflow": "orgs"})
    bus.publish("r-gauge-1", "step.progress", {"step": "validate", "rows": 5})
    later = started + dt.timedelta(minutes=12)
    gauges.update(store.list_runs(status="running"), later)
    assert recorded.get("augment_runs_running", workflow="orgs") == 1
    assert 715 <= recorded.get("augment_run_progress_age_seconds", workflow="orgs") <= 725
    assert recorded.get("augment_run_budget_share", workflow="orgs") == 0
    assert recorded.get("augment_review_queue_items", state="pending") == 0
    store.finish_run("r-gauge-1", "succeeded")
    gauges.update(store.list_runs(status="running"), later)
    assert recorded.get("augment_runs_running", workflow="orgs") == 0
    assert recorded.get("augment_run_progress_age_seconds", workflow="orgs") == 0
