"""Recording the metrics of augment_core/metric_catalog.py through `ray.util.metrics`, so each
node's metrics agent exports them (Prometheus scrapes the agents; PLATFORM_NOTES: Metrics).

In a process that is not part of a Ray cluster (a unit test, the CLI before it joins one, a lone
API process) recording does nothing. A name or label missing from the catalogue is a bug and
raises, so the code and the documented table cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray.util import metrics as ray_metrics

from augment_core.metric_catalog import BY_NAME, Metric

log = logging.getLogger(__name__)
_made: dict[str, Any] = {}
_lock = threading.Lock()


def count(name: str, value: float = 1.0, **labels: str) -> None:
    """Add to a counter (values below or at 0 are not recorded: counters only go up)."""
    if value > 0:
        _record(name, "counter", value, labels)


def observe(name: str, value: float, **labels: str) -> None:
    """One observation of a histogram."""
    _record(name, "histogram", value, labels)


def set_gauge(name: str, value: float, **labels: str) -> None:
    _record(name, "gauge", value, labels)


def _record(name: str, kind: str, value: float, labels: dict[str, str]) -> None:
    metric = BY_NAME.get(name)
    if metric is None or metric.type != kind:
        raise ValueError(f"{name!r} is not a {kind} of augment_core/metric_catalog.py")
    if set(labels) != set(metric.labels):
        raise ValueError(f"{name} takes the labels {', '.join(metric.labels)}, not {', '.join(sorted(labels))}")
    if not in_cluster():
        return
    try:
        instrument = _instrument(metric)
        tags = {k: str(v) for k, v in labels.items()}
        if kind == "counter":
            instrument.inc(value, tags=tags)
        elif kind == "histogram":
            instrument.observe(value, tags=tags)
        else:
            instrument.set(value, tags=tags)
    except Exception as exc:  # noqa: BLE001 - a metric never fails the work it measures
        log.warning("metric %s not recorded: %s", name, exc)


def in_cluster() -> bool:
    """Whether this process is part of a Ray cluster, whose agent would export what it records."""
    return ray.is_initialized()


def _instrument(metric: Metric) -> Any:
    with _lock:
        made = _made.get(metric.name)
        if made is None:
            description = metric.meaning
            if metric.type == "counter":
                made = ray_metrics.Counter(metric.name, description=description, tag_keys=metric.labels)
            elif metric.type == "histogram":
                made = ray_metrics.Histogram(metric.name, description=description,
                                             boundaries=list(metric.boundaries), tag_keys=metric.labels)
            else:
                made = ray_metrics.Gauge(metric.name, description=description, tag_keys=metric.labels)
            _made[metric.name] = made
        return made
