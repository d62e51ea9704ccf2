"""The engine's spans (augment_core/tracing.py): a step on one batch, a provider call, an online
call through the in-process engine. Kept here so that the code they measure carries one line each.

Attributes name the run, workflow, step, provider account and model, counts and outcomes; never a
key, a prompt, a reply or a record's values.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.trace import Span

from augment_core.logs import log_context
from augment_core.tracing import RUN_KEY, fail, span
from pipelines.inference.context import RunContext
from pipelines.spec.providers import account_of

if TYPE_CHECKING:
    from pipelines.spec.workflow import WorkflowSpec


class Step(Protocol):
    step_name: str

    @property
    def name(self) -> str: ...

    def status_column(self) -> str | None: ...


@contextmanager
def step_batch(step: Step, rows: int, context: RunContext | None) -> Iterator[Span]:
    """`augment.step.batch`: one step applied to one batch. In a batch run's worker it is a child of
    the coordinator's span of that step (its traceparent travels in the run's context); on the
    online path, of the current span. Log lines inside it name the run and step."""
    trace = context.trace if context is not None else {}
    run_id = context.run_id if context is not None else None
    parent = trace.get(step.step_name) or trace.get(RUN_KEY)
    attributes = {"augment.step": step.step_name, "augment.augmenter": step.name, "augment.run_id": run_id,
                  "augment.records.rows": rows}
    with log_context(run_id, step.step_name), span("augment.step.batch", attributes, parent) as current:
        yield current


def record_step_outcome(current: Span, step: Step, table: pa.Table) -> None:
    """The records the step left in error or skipped, on its batch span."""
    status = step.status_column()
    if not current.is_recording() or status is None or status not in table.column_names:
        return
    values = pc.value_counts(table[status]).to_pylist()
    _set_outcome(current, {v["values"]: v["counts"] for v in values if v["values"] is not None})


def record_step_statuses(current: Span, step: Step, columns: Mapping[str, list[Any]]) -> None:
    """`record_step_outcome` of a step's added columns held as Python lists (engine/rows.py)."""
    status = step.status_column()
    if not current.is_recording() or status is None or status not in columns:
        return
    _set_outcome(current, Counter(columns[status]))


def _set_outcome(current: Span, counts: Mapping[Any, int]) -> None:
    current.set_attributes({"augment.records.failed": counts.get("error", 0),
                            "augment.records.skipped": counts.get("skipped", 0)})


Result = TypeVar("Result")


def provider_call(method: Callable[..., Awaitable[Result]]) -> Callable[..., Awaitable[Result]]:
    """`augment.provider_call` around an inference step's call of one record (every attempt and
    retry of it): provider, account, model, attempts, tokens, cost, outcome."""

    @functools.wraps(method)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Result:
        provider = getattr(self, "provider", None)
        name = self.params.provider
        attributes = {
            "augment.step": self.step_name, "augment.augmenter": self.name, "augment.run_id": self.context.run_id,
            "augment.provider": name, "augment.provider.account": account_of(name, provider) if provider else None,
            "augment.provider.kind": provider.kind.value if provider else None, "augment.model": self.model(),
        }
        with span("augment.provider_call", attributes) as current:
            outcome = await method(self, *args, **kwargs)
            trail = getattr(outcome, "provenance", {}) or {}
            current.set_attributes({
                "augment.outcome": getattr(outcome, "status", "unknown"),
                "augment.provider.attempts": int(trail.get("attempts") or 0),
                "augment.provider.tokens_in": int(trail.get("tokens_in") or 0),
                "augment.provider.tokens_out": int(trail.get("tokens_out") or 0),
                "augment.provider.cost_usd": float(trail.get("cost_usd") or 0.0),
                "augment.provider.latency_ms": float(trail.get("latency_ms") or 0.0),
            })
            if getattr(outcome, "status", None) == "error":
                fail(current, getattr(outcome, "error", None))
            return outcome

    return traced


Tables = tuple[pa.Table, pa.Table]


def engine_call(method: Callable[..., Tables]) -> Callable[..., Tables]:
    """`augment.augment`: the in-process engine on one batch of records (an API request, a stream's
    micro-batch, a rerun), with the records in, valid and quarantined."""

    @functools.wraps(method)
    def traced(self: Any, raw: pa.Table, *args: Any) -> Tables:
        with engine_span(self.spec, self.context, raw.num_rows) as current:
            augmented, invalid = method(self, raw, *args)
            counted(current, augmented.num_rows, invalid.num_rows)
            return augmented, invalid

    return traced


@contextmanager
def engine_span(spec: WorkflowSpec, context: RunContext, records: int) -> Iterator[Span]:
    """`augment.augment` around the in-process engine's work on `records` records (engine_call, or
    the row path of engine/rows.py); `counted` gives it the outcome."""
    attributes = {"augment.workflow": spec.name, "augment.workflow.version": spec.version,
                  "augment.run_id": context.run_id, "augment.records.in": records}
    with span("augment.augment", attributes) as current:
        yield current


def counted(current: Span, valid: int, quarantined: int) -> None:
    current.set_attributes({"augment.records.valid": valid, "augment.records.quarantined": quarantined})
