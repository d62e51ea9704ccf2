"""Every metric augment exports: name, type, labels and meaning, in one place.

The recorder (`pipelines/metrics.py`) refuses a name or a label that is not here, the metrics
table in docs/metrics.md is checked against it, and so are the queries of the Grafana dashboard
and the Prometheus alert rules (cluster/). Ray's metrics agent on each node exports them with the
`ray_` prefix, counters with `_total` (`exported_name`), and adds its own labels (SessionName,
NodeAddress, WorkerId, ...): every process keeps its own series, so queries sum by the labels here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_SECONDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)


@dataclass(frozen=True)
class Metric:
    name: str
    type: MetricType
    labels: tuple[str, ...]
    meaning: str
    recorded_by: str
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        return exported_name(self.name, self.type)


def exported_name(name: str, type: MetricType) -> str:
    """The name Prometheus sees (a histogram's series add _bucket, _sum and _count)."""
    return f"ray_{name}_total" if type == "counter" else f"ray_{name}"


CATALOG: tuple[Metric, ...] = (
    # Runs: recorded once per run, from its stored outcome, when it ends.
    Metric("augment_records", "counter", ("workflow", "outcome"),
           "Records of ended runs: outcome in (read), valid, quarantined, augmented (written), failed (a step in"
           " error), skipped (a step skipped, none in error). in = valid + quarantined.",
           "the run's coordinator, when the run ends"),
    Metric("augment_step_records", "counter", ("workflow", "step", "outcome"),
           "Records of ended runs per augmenting step: outcome ok, error or skipped.",
           "the run's coordinator, when the run ends"),
    Metric("augment_runs", "counter", ("workflow", "status"),
           "Runs ended, by final status (succeeded, failed, cancelled).", "the run's coordinator, when the run ends"),
    Metric("augment_run_duration_seconds", "histogram", ("workflow", "status"),
           "Wall-clock time of ended runs, from start to end.", "the run's coordinator, when the run ends",
           RUN_SECONDS),
    Metric("augment_runs_running", "gauge", ("workflow",), "Runs running now.",
           "the alert watcher, every AUGMENT_ALERT_INTERVAL_SECONDS"),
    Metric("augment_run_progress_age_seconds", "gauge", ("workflow",),
           "The longest time any running run of the workflow has gone without progress (0 without running runs).",
           "the alert watcher, every interval"),
    Metric("augment_run_budget_share", "gauge", ("workflow",),
           "The highest share of its budget (0-1) a running run of the workflow has spent (0 without a budget).",
           "the alert watcher, every interval"),
    # Providers: per account (a provider's `account`, else its name), over runs, the API and reruns.
    Metric("augment_provider_requests", "counter", ("account", "outcome"),
           "Requests sent to the provider, one per attempt: outcome ok (2xx/3xx), rate_limited (429),"
           " error (any other status), no_reply (timeout, dropped connection).",
           "the account's limiter, as each attempt gives its permit back"),
    Metric("augment_provider_latency_seconds", "histogram", ("account",),
           "Time from sending an attempt to its reply (or its failure), per attempt.",
           "the account's limiter, from the caller's measure", SECONDS),
    Metric("augment_provider_tokens", "counter", ("account",),
           "Tokens the provider reports as used (prompt and completion).", "the account's limiter"),
    Metric("augment_provider_cost_usd", "counter", ("account",),
           "Provider spend in USD at the spec's prices, failed attempts included.",
           "the inference step, per batch of records"),
    Metric("augment_cache_lookups", "counter", ("account", "result"),
           "Result-cache lookups of provider calls: result hit (no call sent) or miss.",
           "the inference step, per batch of records"),
    Metric("augment_limiter_wait_seconds", "histogram", ("account",),
           "Time a call waited in the account's limiter for its permit (the pacing).",
           "the account's limiter", SECONDS),
    Metric("augment_provider_circuit_open", "gauge", ("account",),
           "1 while the account's circuit is open (calls refused after repeated failures), else 0.",
           "the account's limiter, on every permit"),
    Metric("augment_provider_limit_per_second", "gauge", ("account",),
           "The account's request limit per second (its requests_per_minute / 60); the limiter paces at 0.98 of it.",
           "the account's limiter, when its limits are set"),
    # Review
    Metric("augment_review_decisions", "counter", ("dataset", "decision"),
           "Review decisions: accepted, edited, rejected, rerun.", "whoever decides: the API, the review panel"),
    Metric("augment_review_queue_items", "gauge", ("state",),
           "Review items by state (pending, accepted, edited, rejected).", "the alert watcher, every interval"),
    # Event bus
    Metric("augment_event_consumer_lag", "gauge", ("group",),
           "Events (or stream messages) a consumer group has not yet handled.", "the alert watcher, every interval"),
    Metric("augment_event_dead_letters", "gauge", ("group",),
           "Events a consumer group's handler failed on and set aside (counted up to 1,000).",
           "the alert watcher, every interval"),
    # API
    Metric("augment_api_requests", "counter", ("route", "method", "status", "caller"),
           "API requests by route template, method, HTTP status and caller: the key's public prefix"
           " (as the admin panel and audit log show it, never the secret), 'session' or 'anonymous'.",
           "each API replica"),
    Metric("augment_api_request_seconds", "histogram", ("route", "method"),
           "Time to answer an API request (to its first byte for streams).", "each API replica", SECONDS),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOG}
EXPORTED: dict[str, Metric] = {m.exported: m for m in CATALOG}


def exported_series(metric: Metric) -> tuple[str, ...]:
    """Every series name Prometheus may hold for the metric."""
    if metric.type == "histogram":
        return tuple(f"{metric.exported}_{s}" for s in ("bucket", "sum", "count"))
    return (metric.exported,)


def markdown_table() -> str:
    """The table of docs/metrics.md."""
    rows = ["| exported name | type | labels | meaning | recorded by |", "|---|---|---|---|---|"]
    for m in CATALOG:
        rows.append(f"| `{m.exported}` | {m.type} | {', '.join(f'`{label}`' for label in m.labels)} |"
                    f" {m.meaning} | {m.recorded_by} |")
    return "\n".join(rows)
