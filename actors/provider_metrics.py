"""A provider account's metrics (augment_core/metric_catalog.py), recorded by its limiter actor:
every attempt of every caller in the cluster gives its permit back there, with its outcome."""

from __future__ import annotations

from augment_core.ratelimit import Grant, Limits, Outcome
from pipelines import metrics


def outcome_of(outcome: Outcome) -> str:
    """ok, rate_limited, error or no_reply: what the attempt's reply was."""
    if outcome.status is None:
        return "no_reply"
    if outcome.status == 429:
        return "rate_limited"
    return "ok" if outcome.status < 400 else "error"


class LimiterMeter:
    def __init__(self, account: str) -> None:
        self.account = account
        self._circuit: str | None = None

    def limits(self, limits: Limits) -> None:
        per_second = (limits.requests_per_minute or 0.0) / 60.0
        metrics.set_gauge("augment_provider_limit_per_second", per_second, account=self.account)
        self.circuit("closed" if self._circuit is None else self._circuit)

    def granted(self, grant: Grant, circuit: str) -> None:
        if grant.granted:
            metrics.observe("augment_limiter_wait_seconds", grant.waited, account=self.account)
        self.circuit(circuit)

    def released(self, outcome: Outcome, circuit: str) -> None:
        if outcome.sent:
            metrics.count("augment_provider_requests", 1, account=self.account, outcome=outcome_of(outcome))
            if outcome.seconds is not None:
                metrics.observe("augment_provider_latency_seconds", outcome.seconds, account=self.account)
            if outcome.tokens:
                metrics.count("augment_provider_tokens", outcome.tokens, account=self.account)
        self.circuit(circuit)

    def circuit(self, state: str) -> None:
        """The gauge is set when the state changes (and once at the start)."""
        if state != self._circuit:
            self._circuit = state
            metrics.set_gauge("augment_provider_circuit_open", 1.0 if state == "open" else 0.0, account=self.account)
