"""Each caller's daily provider spend on online calls and review reruns.

Counted like a run's budget (pipelines/inference/budget.py: reserve the most a call could cost,
then settle its real cost), but on a ledger per key (or per user's sessions) and UTC day, kept in
the gateway's shared quota store, so every replica of every app spends from the same one.

The online engine of a workflow is built once per spec and shared by every request, so its
RunContext holds `CurrentCallerBudget`, which spends from the ledger of the request being served:
the route sets it in a context variable around the call (`spending`), and `run_sync` carries it
onto the provider loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from augment_core.identity import Principal
from pipelines.augmenters.inference_base import InferenceAugmenter
from pipelines.engine.inprocess import InProcessEngine
from serve_apps.gateway.gate import Gate


def utc_day(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).date().isoformat()


def next_midnight(now: dt.datetime) -> dt.datetime:
    """When the caller's ledger starts afresh: the next UTC midnight."""
    day = now.astimezone(dt.timezone.utc).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


class SpendCapReached(Exception):
    """The caller spent its cap for today already: the request is refused (429) before any work."""

    def __init__(self, principal: Principal, spent: float, cap: float, now: dt.datetime) -> None:
        self.spent, self.cap, self.resets_at = spent, cap, next_midnight(now)
        self.retry_after = max(1, math.ceil((self.resets_at - now).total_seconds()))
        whose = f"key {principal.key_prefix}" if principal.via == "key" else f"{principal.user}'s sessions"
        super().__init__(f"the daily provider spend cap of {cap:g} USD of {whose} is reached ({spent:.4f} USD"
                         f" spent today, UTC); it resets at {self.resets_at:%Y-%m-%dT%H:%M}Z")


@dataclass
class CallerSpend:
    """The Budget of one request, on its caller's ledger of the day the request came in. Once a
    reservation is refused, the request sends no more calls (like a run over budget): its records
    that needed one are 'skipped: budget', whatever a smaller call would still fit."""

    gate: Gate
    who: str
    cap: float
    day: str
    spent_usd: float = 0.0  # what this request's calls cost
    exhausted: bool = False

    async def reserve(self, usd: float) -> bool:
        if self.exhausted:
            return False
        if not await asyncio.to_thread(self.gate.reserve_spend, self.who, self.day, usd, self.cap):
            self.exhausted = True
            return False
        return True

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        cost = float(usage.get("cost_usd", 0.0))
        if reserved or cost:  # skips and cache hits cost nothing: no round trip
            await asyncio.to_thread(self.gate.settle_spend, self.who, self.day, reserved, cost)
        self.spent_usd += cost


_current: ContextVar[CallerSpend | None] = ContextVar("augment_caller_spend", default=None)


class CurrentCallerBudget:
    """The budget of the API's online RunContext: the spend of the request being served. With no
    request's spend set, no call is sent: online spending is never unaccounted."""

    async def reserve(self, usd: float) -> bool:
        spend = _current.get()
        return False if spend is None else await spend.reserve(usd)

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        spend = _current.get()
        if spend is not None:
            await spend.settle(step, reserved, usage)


def cap_of(gate: Gate, principal: Principal) -> float:
    """The key's own cap, else the gateway's default (sessions always take the default)."""
    own = principal.daily_spend_usd
    return own if own is not None else gate.settings.api_daily_spend_usd


def open_spend(gate: Gate, principal: Principal, refuse_at_cap: bool = True,
               now: dt.datetime | None = None) -> CallerSpend:
    """The spend of this request. With `refuse_at_cap`: SpendCapReached when the day's cap is used
    up already, QuotaUnavailable (from the gate) when the ledger cannot be read."""
    now = now or dt.datetime.now(dt.timezone.utc)
    day, cap = utc_day(now), cap_of(gate, principal)
    if refuse_at_cap:
        spent = gate.spent(principal.quota_id, day)
        if spent >= cap:
            raise SpendCapReached(principal, spent, cap, now)
    return CallerSpend(gate, principal.quota_id, cap, day)


@contextmanager
def spending(spend: CallerSpend) -> Iterator[CallerSpend]:
    """Provider calls made in this block (in this thread, and on the provider loop for it) spend from `spend`."""
    token = _current.set(spend)
    try:
        yield spend
    finally:
        _current.reset(token)


def calls_providers(workflow: InProcessEngine) -> bool:
    """Whether augmenting with `workflow` may call a provider (and so spend)."""
    return any(isinstance(step, InferenceAugmenter) and step.calls_provider for step in workflow.chain)
