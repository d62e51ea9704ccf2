"""What provider calls cost a run, per step, and the budget that stops them.

Before each attempt of a call (each retry too) the caller reserves the most it could cost; when
that reservation would take spending past the budget, the attempt is not sent, and no later one is
either: the remaining records are marked 'skipped: budget'. After the call its reservations become
what its attempts were charged, failed ones included (pipelines.augmenters.inference_base).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

USAGE_KEYS = ("calls", "cache_hits", "failed", "skipped", "tokens_in", "tokens_out", "cost_usd")


class Budget(Protocol):
    async def reserve(self, usd: float) -> bool: ...

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None: ...


class CostLedger:
    """Thread-safe totals of one run (held by its coordinator, or in-process)."""

    def __init__(self, max_usd: float | None = None) -> None:
        self.max_usd = max_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.exhausted = False
        self.steps: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable, for plans run without a coordinator (tests): a copy in another process is a
        # ledger of that process alone; runs share one through CoordinatorBudget.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def carried_on(cls, max_usd: float | None, summary: dict[str, Any] | None) -> "CostLedger":
        """A resumed run's ledger: it goes on from what the run had spent, under the same budget."""
        ledger = cls(max_usd)
        if summary:
            ledger.spent = float(summary.get("total_usd") or 0.0)
            ledger.exhausted = bool(summary.get("budget_exhausted"))
            ledger.steps = {name: dict(totals) for name, totals in (summary.get("steps") or {}).items()}
        return ledger

    def reserve(self, usd: float) -> bool:
        with self._lock:
            if self.exhausted:
                return False
            if self.max_usd is not None and self.spent + self.reserved + usd > self.max_usd:
                self.exhausted = True
                return False
            self.reserved += usd
            return True

    def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += usage.get("cost_usd", 0.0)
            totals = self.steps.setdefault(step, {key: 0 for key in USAGE_KEYS})
            for key, value in usage.items():
                totals[key] = totals.get(key, 0) + value

    def summary(self) -> dict[str, Any]:
        with self._lock:
            steps = {
                name: {k: (round(v, 6) if k == "cost_usd" else int(v)) for k, v in totals.items()}
                for name, totals in self.steps.items()
            }
            return {
                "total_usd": round(self.spent, 6),
                "budget_usd": self.max_usd,
                "budget_exhausted": self.exhausted,
                "steps": steps,
            }


class LocalBudget:
    """A ledger in this process (online requests, previews, tests)."""

    def __init__(self, max_usd: float | None = None) -> None:
        self.ledger = CostLedger(max_usd)

    async def reserve(self, usd: float) -> bool:
        return self.ledger.reserve(usd)

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        self.ledger.settle(step, reserved, usage)
