"""ProviderLimiter: one named actor per provider account, shared by the whole cluster.

Every call to a provider — from any Ray Data worker of any run and from any replica of the
online API — takes its permit here, so the account's requests/min, tokens/min and in-flight
limits hold cluster-wide, and one 429 slows every caller down. Detached: it outlives the job
that created it, so concurrent runs and the API keep sharing one limiter.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

from actors.detached import ensure_detached
from actors.naming import NAMESPACE, limiter_name
from actors.provider_metrics import LimiterMeter
from augment_core.ratelimit import Grant, Limits, Outcome, RateLimiter
from pipelines.inference.permits import Permits


class ProviderLimiter:
    """The account's RateLimiter behind async methods: as an actor, waiting callers are coroutines,
    so thousands can queue for permits."""

    def __init__(self, account: str, limits: Limits) -> None:
        self.account = account
        self.limiter = RateLimiter(limits)
        self.meter = LimiterMeter(account)
        self.meter.limits(limits)

    def configure(self, limits: Limits) -> None:
        self.limiter.configure(limits)
        self.meter.limits(limits)

    async def acquire(self, tokens: int, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Grant:
        grant = await self.limiter.acquire(tokens, max_wait, hold, rank, urgent)
        self.meter.granted(grant, self.limiter.circuit())
        return grant

    async def release(self, permit: int, outcome: Outcome) -> None:
        self.limiter.release(permit, outcome)
        self.meter.released(outcome, self.limiter.circuit())

    async def renew(self, permit: int, hold: float) -> bool:
        return self.limiter.renew(permit, hold)

    async def snapshot(self) -> dict[str, Any]:
        return {"account": self.account, "limits": self.limiter.limits.__dict__, **self.limiter.snapshot()}


# Restarted when it dies: permits in flight are forgotten, and the limits come back with the next call.
# Callers' calls wait for the restart and are sent again (max_task_retries), rather than fail every
# batch in flight: the limiter's node lost (Ray restarts it elsewhere once it marks the node dead) once
# failed a whole run (tests/integration/test_two_nodes.py). A call sent twice costs nothing: the new
# limiter knows none of the old one's permits (a release or renewal of one is answered as for a lost one).
ProviderLimiterActor = ray.remote(  # type: ignore[call-overload]  # Ray's overloads omit max_concurrency
    num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=10_000)(ProviderLimiter)


class ActorPermits:
    """Permits from the account's ProviderLimiter actor (the Permits of pipelines/inference)."""

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle

    async def acquire(self, tokens: int, max_wait: float | None = None, hold: float | None = None,
                      rank: float | None = None, urgent: bool = False) -> Grant:
        return await self.handle.acquire.remote(tokens, max_wait, hold, rank, urgent)

    async def release(self, permit: int, outcome: Outcome) -> None:
        await self.handle.release.remote(permit, outcome)

    async def renew(self, permit: int, hold: float) -> bool:
        return await self.handle.renew.remote(permit, hold)


def limiter_for(account: str, limits: Limits) -> ActorHandle:
    """The account's limiter actor, created on first use; its limits follow the latest spec."""
    handle = ensure_detached(ProviderLimiterActor, limiter_name(account), account, limits)
    handle.configure.remote(limits)
    return handle


LIMITER_PREFIX = limiter_name("")


def limiter_snapshots(timeout_s: float = 2.0) -> list[dict[str, Any]]:
    """Every provider account's limiter on this cluster, as it stands now (`RateLimiter.snapshot`
    with the account and its limits); an account whose actor does not answer says so."""
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if a.get("namespace") == NAMESPACE and a["name"].startswith(LIMITER_PREFIX))
    refs: dict[str, ray.ObjectRef[dict[str, Any]]] = {
        name: ray.get_actor(name, namespace=NAMESPACE).snapshot.remote() for name in names}
    found: list[dict[str, Any]] = []
    for name, ref in refs.items():
        try:
            found.append(ray.get(ref, timeout=timeout_s))
        except Exception as exc:  # a restarting actor: shown as such, the others still are
            found.append({"account": name.removeprefix(LIMITER_PREFIX), "error": type(exc).__name__})
    return found


def cluster_permits(account: str, limits: Limits) -> Permits:
    """The RunContext.permits_for of runs and replicas on a cluster."""
    return ActorPermits(limiter_for(account, limits))
