"""The base of augmenters that call providers (llm, http, embed).

Subclasses say how a record becomes a request (`build_request`) and how a reply becomes values
(`parse`); the base owns the rest, per record: cache lookup, budget, permits, retries, invalid
replies, and the status, error and provenance columns. A record is never dropped: it ends
'ok', 'error' (with the reason) or 'skipped' (with the reason).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
from pydantic import Field

from augment_core.cache import cache_key
from pipelines import metrics
from pipelines.augmenters.base import Augmenter, AugmenterParams, values_of
from pipelines.inference.client import Attempt, Reply, Request, call
from pipelines.inference.context import RunContext
from pipelines.inference.loop import run_sync
from pipelines.inference.spans import provider_call
from pipelines.spec.base import IDENTIFIER
from pipelines.spec.providers import (
    ProviderError,
    ProviderKind,
    ProviderSpec,
    account_of,
    check_host,
    secret_names,
)

STATUS_TYPE = pa.string()  # ok | error | skipped
SKIPPED = "skipped: "


class InvalidReply(ValueError):
    """The provider answered, but not with what was asked for: worth another try."""


class InferenceParams(AugmenterParams):
    provider: str = Field(pattern=IDENTIFIER, description="A provider declared in the workflow or providers file.")
    skip_if_empty: list[str] = Field(
        default_factory=list, max_length=50,
        description="Columns without which a record is not sent: it ends 'skipped' with the reason.",
    )


@dataclass
class Outcome:
    status: str  # ok | error | skipped
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


class InferenceAugmenter(Augmenter):
    """Adds its output columns plus `<step>_status`, `<step>_error` and `<step>_provenance`."""

    provider_kind: ClassVar[ProviderKind]
    string_inputs = False
    params: InferenceParams

    def __init__(self, params: InferenceParams, step_name: str, overwrite: bool = False) -> None:
        super().__init__(params, step_name, overwrite)
        self.context = RunContext()
        self.provider: ProviderSpec | None = None
        self.account = ""  # the provider account its calls count against, known at setup

    # declared by subclasses ---------------------------------------------------------------
    @abstractmethod
    def outputs(self) -> dict[str, pa.DataType]:
        """The value columns this step adds."""

    @abstractmethod
    def build_request(self, record: Mapping[str, Any]) -> Request:
        """The request for one record (raises ValueError when the record cannot make one)."""

    @abstractmethod
    def parse(self, body: Any) -> dict[str, Any]:
        """Values for `outputs()` from a reply body; raises InvalidReply when it does not fit."""

    def usage(self, body: Any) -> tuple[int, int] | None:
        """(tokens in, tokens out) a reply (or an error reply) says it was billed for; None when it says nothing."""
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return None
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)

    def estimate(self, request: Request) -> tuple[int, int]:
        """(tokens in, most tokens out) before the call: what permits and the budget reserve."""
        return 0, 0

    def model(self) -> str | None:
        return None

    def identity(self) -> dict[str, Any]:
        """What besides the request decides the result (e.g. the output schema): in the cache key."""
        return {}

    def template_hash(self) -> str | None:
        return None

    invalid_retries: int = 0  # extra calls when a reply does not fit

    @classmethod
    def provider_names(cls, params: Mapping[str, Any]) -> list[str]:
        name = params.get("provider")
        return [name] if isinstance(name, str) else []

    # the base's work ----------------------------------------------------------------------
    @property
    def calls_provider(self) -> bool:
        """False for a step computed in the worker (a local model): previews run it."""
        return True

    def status_column(self) -> str | None:
        return f"{self.step_name}_status"

    def reads_required(self) -> list[tuple[str, str]]:
        return [("skip_if_empty", column) for column in self.params.skip_if_empty]

    def status_columns(self) -> dict[str, pa.DataType]:
        prefix = self.step_name
        return {f"{prefix}_status": STATUS_TYPE, f"{prefix}_error": pa.string(), f"{prefix}_provenance": pa.string()}

    def adds(self) -> dict[str, pa.DataType]:
        return {**self.outputs(), **self.status_columns()}

    def value_columns(self) -> list[str]:
        return list(self.outputs())

    def provider_errors(self, providers: Mapping[str, ProviderSpec]) -> list[tuple[str, str]]:
        name = self.params.provider
        provider = providers.get(name)
        if provider is None:
            declared = ", ".join(sorted(providers)) or "none"
            return [("provider", f"unknown provider {name!r} (declared: {declared}); declare it under"
                                 " providers: in the workflow or in the providers file")]
        if provider.kind != self.provider_kind:
            return [("provider", f"provider {name!r} is of kind {provider.kind.value}; {self.name} needs"
                                 f" kind {self.provider_kind.value}")]
        return self.check_provider(provider)

    def check_provider(self, provider: ProviderSpec) -> list[tuple[str, str]]:
        """(param, reason) for what this step needs of its provider and it lacks."""
        return []

    def bind(self, context: RunContext) -> None:
        self.context = context

    def setup(self) -> None:
        name = self.params.provider
        provider = self.context.providers.get(name)
        if provider is None:
            raise ProviderError(f"unknown provider {name!r}")
        self.provider = provider
        # Configuration errors fail the run before any record: a host written as a private address...
        check_host(provider, provider.base_url, resolve=False)
        # ...a secret this provider may not receive (the loader refuses it too; a spec built otherwise
        # meets this)...
        names = self.secret_names(self.context.providers)
        foreign = sorted(set(names) - provider.allowed_secrets())
        if foreign:
            raise ProviderError(f"provider {name!r} may not receive environment variable(s) {', '.join(foreign)}")
        self.account = account_of(name, provider)
        self.permits = self.context.permits_for(self.account, provider.limits.limits())
        self.cache = self.context.cache()
        if not self.context.dry_run:  # ...or a missing key
            missing = [n for n in names if not self._resolve_secret(n)]
            if missing:
                raise ProviderError(f"environment variable(s) {', '.join(missing)} are not set")

    def secret_names(self, providers: Mapping[str, ProviderSpec]) -> list[str]:
        provider = providers.get(self.params.provider or "")
        return secret_names(provider) if provider else []

    def _resolve_secret(self, name: str) -> bool:
        if os.environ.get(name):
            return True
        value = self.context.secrets(name) if self.context.secrets else None
        if value:
            os.environ[name] = value  # this worker process only
        return bool(value)

    def secret(self, name: str) -> str:
        """A key or token from the environment, read at call time, never stored; masked in previews."""
        if self.context.dry_run:
            return "***"
        value = os.environ.get(name)
        if not value:
            raise ProviderError(f"environment variable {name} is not set")
        return value

    def auth_headers(self) -> dict[str, str]:
        assert self.provider is not None
        env = self.provider.api_key_env
        return {"Authorization": f"Bearer {self.secret(env)}"} if env else {}

    def process_batch(self, batch: pd.DataFrame) -> Mapping[str, Sequence[Any]]:
        records = _records(batch)
        outcomes = run_sync(self.process_records(records)) if records else []
        return self.columns_of(outcomes)

    def requests_for(self, table: pa.Table) -> list[Request | str]:
        """The request of each record (or why it has none), without calling: for previews."""
        columns = list(dict.fromkeys(column for _, column in self.reads()))
        return [self._build(record) for record in _records(table.select(columns).to_pandas(types_mapper=pd.ArrowDtype))]

    def _build(self, record: Mapping[str, Any]) -> Request | str:
        empty = [c for c in self.params.skip_if_empty if record.get(c) is None or str(record.get(c)).strip() == ""]
        if empty:
            return SKIPPED + f"{', '.join(empty)} is empty"
        try:
            return self.build_request(record)
        except (ValueError, ProviderError) as exc:
            return f"cannot build the request: {exc}"

    def columns_of(self, outcomes: list[Outcome]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {c: [o.values.get(c) for o in outcomes] for c in self.outputs()}
        status, error, provenance = self.status_columns()
        columns[status] = [o.status for o in outcomes]
        columns[error] = [o.error for o in outcomes]
        columns[provenance] = [json.dumps(o.provenance, sort_keys=True) for o in outcomes]
        return columns

    async def process_records(self, records: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        assert self.provider is not None, "setup() first"
        built = [self._build(record) for record in records]
        keys = [self._key(r) if isinstance(r, Request) else None for r in built]
        cached = await asyncio.to_thread(self.cache.get_many, [k for k in keys if k])
        gate = asyncio.Semaphore(max(1, self.provider.limits.max_in_flight))

        async def one(request: Request | str, key: str | None) -> Outcome:
            if isinstance(request, str) and request.startswith(SKIPPED):
                await self.context.budget.settle(self.step_name, 0.0, {"skipped": 1})
                return Outcome("skipped", error=request, provenance=self._provenance(attempts=0))
            if isinstance(request, str):
                return Outcome("error", error=request, provenance=self._provenance(attempts=0))
            if key in cached:
                return self._from_cache(cached[key])
            async with gate:
                outcome = await self._call(request, key)
            value = outcome.provenance.pop("_cache_value", None)
            if value is not None and key:  # stored at once: a worker lost mid-batch repeats no answered call
                await asyncio.to_thread(self.cache.put_many, {key: value})
            return outcome

        outcomes = await asyncio.gather(*(one(r, k) for r, k in zip(built, keys)))
        hits = sum(1 for o in outcomes if o.provenance.get("cache_hit"))
        if hits:
            await self.context.budget.settle(self.step_name, 0.0, {"cache_hits": hits})
        self._meter(outcomes, hits, looked_up=sum(1 for k in keys if k))
        return outcomes

    def _meter(self, outcomes: Sequence[Outcome], hits: int, looked_up: int) -> None:
        """The batch's spend and cache lookups, per account (a dry run sends and spends nothing)."""
        if self.context.dry_run:
            return
        metrics.count("augment_provider_cost_usd", sum(float(o.provenance.get("cost_usd") or 0.0) for o in outcomes),
                      account=self.account)
        if self.context.use_cache and self.context.settings is not None:
            metrics.count("augment_cache_lookups", hits, account=self.account, result="hit")
            metrics.count("augment_cache_lookups", looked_up - hits, account=self.account, result="miss")

    def _key(self, request: Request) -> str:
        assert self.provider is not None
        return cache_key(
            self.provider.kind.value, self.provider.base_url, self.identity(),
            request.method, request.url, request.params, request.json,
        )

    def charged(self, attempt: Attempt, estimate: tuple[int, int]) -> tuple[int, int, float]:
        """(tokens in, tokens out, US dollars) one attempt is charged: what its reply says it used;
        else, for a success or a request that went out without an answer (the provider may have
        done the work), the most it could cost; else (an error reply, nothing sent) nothing."""
        assert self.provider is not None
        prices = self.provider.prices
        used = self.usage(attempt.body) if attempt.body is not None else None
        if used is not None:
            return used[0], used[1], prices.cost(*used)
        if attempt.unanswered or (attempt.status is not None and attempt.status < 400):
            return 0, 0, prices.cost(*estimate)
        return 0, 0, 0.0

    def _idempotency_key(self, key: str | None) -> str | None:
        """The same on every attempt of one call; another for the next call, even of the same request
        (an invalid reply is asked again: the provider must not answer it from its idempotency store)."""
        assert self.provider is not None
        if not self.provider.sends_idempotency_keys():
            return None
        return f"augment-{(key or 'request')[:32]}-{secrets.token_hex(8)}"

    @provider_call
    async def _call(self, request: Request, key: str | None = None) -> Outcome:
        """The record's calls. Each attempt is covered by a reservation of the most one attempt can
        cost: the first is reserved here, every retry by `call` before it is sent (a reservation
        for every possible retry up front would hold max_retries+1 times the cost per record in
        flight, and stop a run near its budget while most of it is never spent). Every attempt is
        charged (`charged`), the failed ones included."""
        assert self.provider is not None
        provider = self.provider
        estimate = self.estimate(request)
        reserve = provider.prices.cost(*estimate)
        attempts, tokens_in, tokens_out, cost, latency = 0, 0, 0, 0.0, 0.0
        problem = "no reply"
        for _ in range(1 + self.invalid_retries):
            stopped = await self.context.gate.stopped()
            if stopped:  # cancelled: what was not sent is not sent
                return Outcome("error", error=stopped, provenance=self._provenance(
                    attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, latency=latency))
            if not await self.context.budget.reserve(reserve):
                await self.context.budget.settle(self.step_name, 0.0, {"skipped": 1})
                return Outcome("skipped", error="skipped: budget", provenance=self._provenance(
                    attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, latency=latency))
            reserved = reserve

            async def reserve_retry() -> bool:
                nonlocal reserved
                if not await self.context.budget.reserve(reserve):
                    return False
                reserved += reserve
                return True

            reply: Reply = await call(
                request, self.permits, tokens=sum(estimate), deadline_s=provider.timeout_seconds,
                attempt_timeout_s=provider.attempt_timeout_seconds, max_retries=provider.max_retries,
                queue_wait_s=provider.queue_timeout_seconds, stopped=self.context.gate.stopped,
                urgent=self.context.interactive, allow_hosts=provider.allow_hosts,
                idempotency_key=self._idempotency_key(key),
                reserve_retry=reserve_retry,
            )
            attempts += reply.attempts
            latency += reply.latency_ms
            charges = [self.charged(attempt, estimate) for attempt in reply.tried]
            t_in, t_out = sum(c[0] for c in charges), sum(c[1] for c in charges)
            spent = sum(c[2] for c in charges)
            tokens_in, tokens_out, cost = tokens_in + t_in, tokens_out + t_out, cost + spent
            usage = {"calls": reply.attempts, "tokens_in": t_in, "tokens_out": t_out, "cost_usd": spent}
            if reply.budget_refused:
                await self.context.budget.settle(self.step_name, reserved, {**usage, "skipped": 1})
                return Outcome("skipped", error=f"skipped: budget ({reply.error})", provenance=self._provenance(
                    attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, latency=latency))
            if not reply.ok:
                await self.context.budget.settle(self.step_name, reserved, {**usage, "failed": 1})
                return Outcome("error", error=reply.error, provenance=self._provenance(
                    attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, latency=latency))
            try:
                values = self.parse(reply.body)
            except InvalidReply as exc:
                problem = str(exc)
                await self.context.budget.settle(self.step_name, reserved, usage)
                continue
            await self.context.budget.settle(self.step_name, reserved, usage)
            provenance = self._provenance(
                attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, latency=latency
            )
            provenance["_cache_value"] = {"values": values, "tokens_in": tokens_in, "tokens_out": tokens_out}
            return Outcome("ok", values=values, provenance=provenance)
        await self.context.budget.settle(self.step_name, 0.0, {"failed": 1})
        return Outcome("error", error=f"invalid reply after {1 + self.invalid_retries} tries: {problem}",
                       provenance=self._provenance(attempts=attempts, tokens_in=tokens_in, tokens_out=tokens_out,
                                                   cost=cost, latency=latency))

    def _from_cache(self, value: Mapping[str, Any]) -> Outcome:
        provenance = self._provenance(attempts=0, cache_hit=True)
        provenance["cached_tokens_in"] = value.get("tokens_in", 0)
        provenance["cached_tokens_out"] = value.get("tokens_out", 0)
        return Outcome("ok", values=dict(value["values"]), provenance=provenance)

    def _provenance(self, *, attempts: int, tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0,
                    latency: float = 0.0, cache_hit: bool = False) -> dict[str, Any]:
        return {
            "augmenter": self.name, "step": self.step_name, "provider": self.params.provider or "local",
            "model": self.model(), "template_hash": self.template_hash(), "cache_hit": cache_hit,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": round(cost, 8),
            "latency_ms": round(latency, 1), "attempts": attempts, "run_id": self.context.run_id,
        }


def _records(batch: pd.DataFrame) -> list[dict[str, Any]]:
    if not len(batch.columns):
        return [{} for _ in range(len(batch))]
    return [dict(zip(batch.columns, row)) for row in zip(*(values_of(batch[c]) for c in batch.columns))]


def estimate_tokens(text: str) -> int:
    """About four characters a token: what budgets and token limits reserve before a call."""
    return math.ceil(len(text) / 4)
