"""OpenTelemetry traces of runs and API requests: off unless the standard OTEL_* variables ask.

Tracing is on in a process when `OTEL_TRACES_EXPORTER=otlp`, or when `OTEL_EXPORTER_OTLP_ENDPOINT`
or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and neither `OTEL_TRACES_EXPORTER=none` nor
`OTEL_SDK_DISABLED=true` says otherwise); the OTLP/HTTP exporter then reads the rest of its
configuration (endpoint, headers, timeout) from the same variables. Otherwise `tracer()` is
OpenTelemetry's no-op tracer and a span costs next to nothing. Each process configures itself
on its first span, from its own environment: on a cluster every process inherits the head
node's (cluster/local.py `cluster_env`), so variables set when the cluster starts reach the CLI,
run coordinators, Ray Data workers and Serve replicas alike.

Spans cross processes as W3C `traceparent` strings: the API's request context into the online
engine (same process), the launching caller's into the run coordinator (`execute`), and the run's
and steps' into Ray Data workers (`RunContext.trace`). Span names and attributes are listed in
docs/operations.md. No attribute ever holds a key, a prompt or a record's values.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "augment"  # unless OTEL_SERVICE_NAME says otherwise
RUN_KEY = "augment.run"  # the run span's traceparent in RunContext.trace (step names are identifiers)
FLUSH_SECONDS = 5.0
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured = False
_provider: TracerProvider | None = None
_NOOP = trace.NoOpTracer()


def tracing_requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for OTLP traces (off by default)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if "none" in exporters:
        return False
    return "otlp" in exporters or bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _configure() -> None:
    global _configured, _provider
    with _lock:
        if _configured:
            return
        _configured = True
        if not tracing_requested():
            return
        # Imported only when asked for: the no-op path loads no exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider = _new_provider(BatchSpanProcessor(OTLPSpanExporter()))


def _new_provider(processor: Any) -> TracerProvider:
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    return provider


def use_exporter(exporter: SpanExporter | None) -> None:
    """Send this process's spans to `exporter`, synchronously (tests: an InMemorySpanExporter);
    None: back to what the environment says, on the next span."""
    global _configured, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = _new_provider(SimpleSpanProcessor(exporter)) if exporter is not None else None
        _configured = exporter is not None


def tracer() -> trace.Tracer:
    """augment's tracer in this process: the no-op tracer unless tracing is on."""
    if not _configured:
        _configure()
    return _provider.get_tracer("augment") if _provider is not None else _NOOP


def enabled() -> bool:
    tracer()
    return _provider is not None


def flush(timeout_s: float = FLUSH_SECONDS) -> None:
    """Export what this process has ended so far: a Ray Data actor or a run coordinator can be
    killed without running its exit hooks."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


# propagation -----------------------------------------------------------------------------------
def traceparent(span: Span | None = None) -> str | None:
    """The W3C traceparent of `span` (default: the current one), or None when nothing is traced."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    return carrier.get("traceparent")


def context_of(traceparent_value: str | None) -> Context | None:
    """The context a traceparent string carries (None: the current context)."""
    if not traceparent_value:
        return None
    return _propagator.extract({"traceparent": traceparent_value})


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The caller's context from an HTTP request's `traceparent`/`tracestate` headers."""
    return _propagator.extract(headers)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, parent: str | None = None) -> Iterator[Span]:
    """A span, current inside the block, child of `parent` (a traceparent) or of the current span.
    An exception escaping the block marks it as an error."""
    if parent is None and not enabled():
        # What the no-op tracer would make current is the current span itself: skip its context
        # switch (14 us a span, eight step spans in a one-record API call).
        yield trace.get_current_span()
        return
    with tracer().start_as_current_span(name, context=context_of(parent), attributes=_clean(attributes)) as current:
        yield current


def fail(current: Span, reason: str | None) -> None:
    """Mark a span as an error with a one-line reason (never a key or a record's values)."""
    current.set_status(Status(StatusCode.ERROR, (reason or "error").splitlines()[0][:500]))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: no None values."""
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def count_attributes(counts: Mapping[str, Any] | None) -> dict[str, int]:
    """A run's counts (in, valid, quarantined, augmented, failed, skipped) as `augment.records.*`."""
    return {f"augment.records.{k}": int(v) for k, v in (counts or {}).items() if isinstance(v, int | float)}


# a run ---------------------------------------------------------------------------------------------
class RunTrace:
    """A run's span and one span per step, kept by its coordinator. `parent` is the traceparent of
    whoever started the run (the CLI, an API request), which may live in another process. A step's
    span ends when the step finishes, but its outcome (records in error, skipped) is known only once
    the run has counted its output: the end time is taken at the finish and the span is ended,
    with its outcome, when the run ends. `parents` holds the run's and each started step's
    traceparent, for the workers (RunContext.trace)."""

    def __init__(self, run_id: str, workflow: str, version: int | None, parent: str | None = None) -> None:
        self.base = {"augment.run_id": run_id, "augment.workflow": workflow}
        self._lock = threading.Lock()
        attributes = _clean({**self.base, "augment.workflow.version": version})
        self.run = tracer().start_span("augment.run", context=context_of(parent), attributes=attributes)
        self.parents: dict[str, str] = {}
        if (own := traceparent(self.run)) is not None:
            self.parents[RUN_KEY] = own
        self._steps: dict[str, tuple[Span, int | None]] = {}
        self._ended = False

    def start_step(self, name: str) -> None:
        with self._lock:
            if self._ended or name in self._steps:
                return
            step = tracer().start_span("augment.step", context=trace.set_span_in_context(self.run),
                                       attributes={**self.base, "augment.step": name})
            self._steps[name] = (step, None)
            if (own := traceparent(step)) is not None:
                self.parents[name] = own

    def finish_step(self, name: str) -> None:
        with self._lock:
            if name in self._steps:
                self._steps[name] = (self._steps[name][0], time.time_ns())

    def end(self, status: str, counts: Mapping[str, Any] | None, error: str | None,
            steps: Sequence[Mapping[str, Any]]) -> None:
        """End every step's span with its final state and counts, then the run's; export them."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            states = {s["name"]: s for s in steps}
            for name, (step, finished) in self._steps.items():
                state = states.get(name, {})
                step.set_attributes(_clean({
                    "augment.step.state": state.get("state"), "augment.records.rows": state.get("rows"),
                    "augment.records.failed": state.get("failed"), "augment.records.skipped": state.get("skipped"),
                }))
                if state.get("state") in ("failed", "cancelled"):
                    fail(step, state.get("error") or state.get("state"))
                step.end(end_time=finished)
            self.run.set_attributes({"augment.run.status": status, **count_attributes(counts)})
            if status != "succeeded":
                fail(self.run, error or status)
            self.run.end()
        flush()
