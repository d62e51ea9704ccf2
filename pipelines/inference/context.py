"""What an inference step needs from the run it is part of, passed explicitly to every worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from augment_core.cache import NoCache, ResultCache, open_cache
from augment_core.ratelimit import Limits
from augment_core.reviews import Kept
from augment_core.settings import Settings
from pipelines.inference.budget import Budget, LocalBudget
from pipelines.inference.permits import Permits, local_permits
from pipelines.spec.providers import ProviderSpec


class Decisions(Protocol):
    """The human decisions on these records' fields, by (record_uuid, field), with values typed
    for their columns (pipelines.review.decisions.DecisionLookup)."""

    def __call__(
        self, record_uuids: Sequence[str], types: Mapping[str, pa.DataType]
    ) -> Mapping[tuple[str, str], Kept]: ...


class RunGate(Protocol):
    """Whether the run may still send provider calls (a cancelled run may not)."""

    async def stopped(self) -> str | None:
        """Why no more calls may be sent, or None while the run goes on."""
        ...


class AlwaysOpen:
    async def stopped(self) -> str | None:
        return None


@dataclass
class RunContext:
    """Providers, where permits come from, the budget, the cache, the run id and the review
    decisions the steps keep.

    Picklable: it travels into Ray Data actors and Serve replicas. `permits_for` is the
    cluster-wide limiter factory on a cluster (actors/provider_limiter.py), local otherwise.
    """

    providers: dict[str, ProviderSpec] = field(default_factory=dict)
    settings: Settings | None = None
    run_id: str | None = None
    permits_for: Callable[[str, Limits], Permits] = local_permits
    budget: Budget = field(default_factory=LocalBudget)
    use_cache: bool = True
    # Where a worker gets a key its environment lacks (the run's coordinator holds them):
    # never through runtime_env, which the dashboard shows.
    secrets: Callable[[str], str | None] | None = None
    dry_run: bool = False  # previews: build requests with masked keys, call nothing
    gate: RunGate = field(default_factory=AlwaysOpen)
    # Handed in by whoever runs the workflow; None: every value is computed, none kept.
    decisions: Decisions | None = None
    # Someone waits for these calls (an API request, a review rerun): in the account's limiter
    # they go ahead of batch calls that came up to URGENT_LEAD_SECONDS before them, instead of
    # waiting behind a whole batch.
    interactive: bool = False
    # W3C traceparents of the run's span and of each started step's (augment_core.tracing.RunTrace),
    # so that workers' spans join the run's trace; empty: spans join whatever span is current.
    trace: dict[str, str] = field(default_factory=dict)

    def cache(self) -> ResultCache:
        if self.settings is None or not self.use_cache:
            return NoCache()
        return open_cache(self.settings)
