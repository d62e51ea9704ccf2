"""What each provider account did for runs, from the runs' own cost records: calls, answers taken
from the result cache instead, and spend — the runs panel's "today" beside each limiter.

A run's cost is kept per step (pipelines/inference/budget.py); the step's provider comes from the
spec the run ran (providers file included), and its account is the provider's `account` or its
name. A step calling several providers (a waterfall) is counted under all of their accounts
joined, since its cost is not split by provider.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from augment_core.store import RunRecord
from pipelines.augmenters.registry import augmenters


@dataclass
class AccountUsage:
    calls: int = 0  # requests sent, retries included
    cache_hits: int = 0  # records answered from the result cache, nothing sent
    cost_usd: float = 0.0
    runs: set[str] = field(default_factory=set)

    @property
    def hit_rate(self) -> float | None:
        """Cache hits over hits plus calls; None when neither happened."""
        looked = self.cache_hits + self.calls
        return self.cache_hits / looked if looked else None


def step_accounts(spec: dict[str, Any]) -> dict[str, str]:
    """Each provider-calling step's name -> its account (several joined with ' + ')."""
    providers = spec.get("providers") or {}
    known = augmenters()
    found: dict[str, str] = {}
    for i, step in enumerate(spec.get("steps") or []):
        kind = known.get(str(step.get("use")))
        if kind is None:
            continue
        names = kind.provider_names(step.get("params") or {})
        if names:
            accounts = dict.fromkeys(str((providers.get(n) or {}).get("account") or n) for n in names)
            found[step.get("name") or f"{step['use']}_{i}"] = " + ".join(accounts)
    return found


def usage_by_account(runs: Iterable[RunRecord]) -> dict[str, AccountUsage]:
    usage: dict[str, AccountUsage] = {}
    for run in runs:
        steps = (run.cost or {}).get("steps") or {}
        if not steps or not run.spec:
            continue
        accounts = step_accounts(run.spec)
        for step, totals in steps.items():
            account = accounts.get(step)
            if account is None:
                continue
            used = usage.setdefault(account, AccountUsage())
            used.calls += int(totals.get("calls", 0))
            used.cache_hits += int(totals.get("cache_hits", 0))
            used.cost_usd += float(totals.get("cost_usd", 0.0))
            used.runs.add(run.id)
    return usage


def spend_per_day(runs: Iterable[RunRecord]) -> list[tuple[str, str, str, float]]:
    """(UTC day the run was created, account, workflow, USD) summed, for the dashboard's plots."""
    totals: dict[tuple[str, str, str], float] = {}
    for run in runs:
        steps = (run.cost or {}).get("steps") or {}
        if not steps or not run.spec:
            continue
        accounts, day = step_accounts(run.spec), run.created_at.strftime("%Y-%m-%d")
        for step, used in steps.items():
            account = accounts.get(step)
            if account is not None and float(used.get("cost_usd", 0.0)):
                key = (day, account, run.workflow)
                totals[key] = totals.get(key, 0.0) + float(used.get("cost_usd", 0.0))
    return sorted((day, account, workflow, round(usd, 6)) for (day, account, workflow), usd in totals.items())
