"""What an inference step needs from the run it is part of, passed explicitly to every worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from augment_core.cache import NoCache, ResultCache, open_cache
from augment_core.ratelimit import Limits
from augment_core.settings import Settings
from pipelines.inference.budget import Budget, LocalBudget
from pipelines.inference.permits import Permits, local_permits
from pipelines.providers import ProviderSpec


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
    """Providers, where permits come from, the budget, the cache and the run id.

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
    workflow: str | None = None  # whose review decisions the steps keep (needs settings)

    def decisions(self) -> Callable[..., Any] | None:
        """The lookup of human review decisions the steps keep; None without a store to ask."""
        if self.settings is None or self.workflow is None or self.dry_run:
            return None
        from pipelines.review import DecisionLookup

        return DecisionLookup(self.settings, self.workflow, self.run_id)

    def cache(self) -> ResultCache:
        if self.settings is None or not self.use_cache:
            return NoCache()
        return open_cache(self.settings)
