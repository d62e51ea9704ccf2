"""The gateway's per-caller quotas (rates, streams, daily spend) in one named actor, so every replica of
every app counts together."""

from __future__ import annotations

from typing import cast

import ray
from ray.actor import ActorHandle

from actors.detached import ensure_detached
from actors.naming import KEY_QUOTAS
from augment_core.quotas import KeyQuotas

# Restarted when it dies: callers start from a clean slate, which only ever lets a little more through
# (a day's spend included: set AUGMENT_REDIS_URL where that matters).
KeyQuotasActor = ray.remote(  # type: ignore[call-overload]  # Ray's overloads omit max_concurrency
    num_cpus=0, max_restarts=-1, max_concurrency=1)(KeyQuotas)
CALL_TIMEOUT_SECONDS = 5.0


class ActorQuotas:
    """The Quotas of augment_core.quotas, answered by the cluster's KeyQuotas actor."""

    def __init__(self) -> None:
        self.handle: ActorHandle = ensure_detached(KeyQuotasActor, KEY_QUOTAS)

    def admit(self, who: str, per_minute: int, burst: int) -> float:
        return cast(float, ray.get(self.handle.admit.remote(who, per_minute, burst), timeout=CALL_TIMEOUT_SECONDS))

    def lease(self, who: str, per_minute: int, burst: int, want: int, returned: int = 0) -> tuple[int, float]:
        answer = cast(tuple[int, float], ray.get(self.handle.lease.remote(who, per_minute, burst, want, returned),
                                                 timeout=CALL_TIMEOUT_SECONDS))
        return int(answer[0]), float(answer[1])

    def open_stream(self, who: str, cap: int) -> bool:
        return cast(bool, ray.get(self.handle.open_stream.remote(who, cap), timeout=CALL_TIMEOUT_SECONDS))

    def close_stream(self, who: str) -> None:
        self.handle.close_stream.remote(who)

    def reserve_spend(self, who: str, day: str, usd: float, cap: float) -> bool:
        return cast(bool, ray.get(self.handle.reserve_spend.remote(who, day, usd, cap), timeout=CALL_TIMEOUT_SECONDS))

    def settle_spend(self, who: str, day: str, reserved: float, spent: float) -> None:
        ray.get(self.handle.settle_spend.remote(who, day, reserved, spent), timeout=CALL_TIMEOUT_SECONDS)

    def spent(self, who: str, day: str) -> float:
        return cast(float, ray.get(self.handle.spent.remote(who, day), timeout=CALL_TIMEOUT_SECONDS))
