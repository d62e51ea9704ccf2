"""Where calls take their permits: a provider account's limiter, shared cluster-wide by the
ProviderLimiter actor (actors/provider_limiter.py) or held in this process when no cluster
is involved (previews, tests, a lone API process)."""

from __future__ import annotations

from typing import Protocol

from augment_core.ratelimit import Grant, Limits, Outcome, RateLimiter


class Permits(Protocol):
    async def acquire(self, tokens: int, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Grant: ...

    async def release(self, permit: int, outcome: Outcome) -> None: ...

    async def renew(self, permit: int, hold: float) -> bool: ...


class LocalPermits:
    """A limiter of this process only (one per account, shared by every step here)."""

    _limiters: dict[str, RateLimiter] = {}

    def __init__(self, account: str, limits: Limits) -> None:
        limiter = self._limiters.get(account)
        if limiter is None:
            limiter = self._limiters[account] = RateLimiter(limits)
        else:
            limiter.configure(limits)
        self.limiter = limiter

    async def acquire(self, tokens: int, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Grant:
        return await self.limiter.acquire(tokens, max_wait, hold, rank, urgent)

    async def release(self, permit: int, outcome: Outcome) -> None:
        self.limiter.release(permit, outcome)

    async def renew(self, permit: int, hold: float) -> bool:
        return self.limiter.renew(permit, hold)


def local_permits(account: str, limits: Limits) -> Permits:
    return LocalPermits(account, limits)
