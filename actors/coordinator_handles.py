"""What a run's workers hold of its coordinator: its budget, its gate, its keys and its progress
reports, each a small picklable object around the actor handle."""

from __future__ import annotations

import time
from typing import cast

import ray
from ray.actor import ActorHandle

GATE_TTL_SECONDS = 0.5


class CoordinatorSecrets:
    """RunContext.secrets of a run: workers ask the coordinator for the keys their process lacks."""

    def __init__(self, coordinator: ActorHandle) -> None:
        self.coordinator = coordinator

    def __call__(self, name: str) -> str | None:
        return cast(str | None, ray.get(self.coordinator.secret.remote(name), timeout=30))


class CoordinatorBudget:
    """The run's budget, kept by its coordinator so that every worker spends from one ledger."""

    def __init__(self, coordinator: ActorHandle, limited: bool) -> None:
        self.coordinator = coordinator
        self.limited = limited

    async def reserve(self, usd: float) -> bool:
        if not self.limited:  # nothing to refuse: spare the round trip
            return True
        return await self.coordinator.reserve.remote(usd)

    async def settle(self, step: str, reserved: float, usage: dict[str, float]) -> None:
        await self.coordinator.settle.remote(step, reserved, usage)


class CoordinatorGate:
    """RunContext.gate of a run: workers stop sending provider calls within GATE_TTL_SECONDS of a
    cancel, without waiting for Ray to reap them after their coordinator is killed."""

    def __init__(self, coordinator: ActorHandle) -> None:
        self.coordinator = coordinator
        self._checked = float("-inf")
        self._reason: str | None = None

    async def stopped(self) -> str | None:
        if self._reason is not None or time.monotonic() - self._checked < GATE_TTL_SECONDS:
            return self._reason
        try:
            self._reason = await self.coordinator.stopped.remote()
        except ray.exceptions.RayActorError:
            self._reason = "run stopped: its coordinator is gone"
        self._checked = time.monotonic()
        return self._reason


class CoordinatorReporter:
    """Sends step progress to the run coordinator without waiting (fire and forget)."""

    def __init__(self, coordinator: ActorHandle) -> None:
        self.coordinator = coordinator

    def __call__(self, step: str, rows: int, seconds: float = 0.0) -> None:
        self.coordinator.report.remote(step, rows, seconds)

    def record_failed(self, step: str, failures: list[dict[str, str]]) -> None:
        """The records a step left in error, one call per batch and step (all of them, uncapped)."""
        self.coordinator.record_failed.remote(step, failures)
