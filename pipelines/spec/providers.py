"""Providers: the endpoints inference augmenters call, declared once with limits and prices.

Declared in configs/providers.yaml (AUGMENT_PROVIDERS_FILE), by the operator, or under
`providers:` in a workflow. A workflow may not redeclare a provider of the file (it would send the
file's key elsewhere), and only the file's providers may name secrets: environment variables whose
values go to that provider alone (`api_key_env`, and `allow_secrets` for the http steps' headers).
Keys never appear here: a provider names the environment variable that holds its key.
"""

from __future__ import annotations

import re
import socket
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator

from augment_core.ratelimit import Limits
from pipelines.spec.addresses import parse_address, refusal
from pipelines.spec.base import IDENTIFIER, StrictModel
from pipelines.spec.errors import pydantic_errors

ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class ProviderKind(str, Enum):
    openai = "openai"  # any OpenAI-compatible chat-completions / embeddings endpoint
    http = "http"  # a JSON API called by the `http` augmenter


class ProviderLimits(StrictModel):
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    max_in_flight: int = Field(default=32, ge=1, le=10_000)
    failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open the circuit.")
    cooldown_seconds: float = Field(default=30.0, gt=0, description="How long an open circuit fails fast.")
    pace: float = Field(
        default=0.98, ge=0.5, le=1.0,
        description="Fraction of the limits to aim at; lower it when callers are far from the limiter.",
    )

    def limits(self) -> Limits:
        return Limits(**self.model_dump())


class ProviderPrices(StrictModel):
    """US dollars; what a call costs is what the provider bills for it."""

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)
    per_request: float = Field(default=0.0, ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_million + tokens_out * self.output_per_million) / 1e6 + self.per_request


class ProviderSpec(StrictModel):
    kind: ProviderKind
    base_url: str = Field(min_length=1, description="e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="Variable holding the key.")
    account: str | None = Field(
        default=None, pattern=IDENTIFIER,
        description="Providers sharing an account share one limiter; default: the provider's name.",
    )
    model: str | None = Field(default=None, description="Default model.")
    limits: ProviderLimits = Field(default_factory=ProviderLimits)
    prices: ProviderPrices = Field(default_factory=ProviderPrices)
    timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600,
        description="Deadline of one call, retries included; the wait for its turn under the limits is not counted.",
    )
    queue_timeout_seconds: float = Field(
        default=1800.0, gt=0, le=86_400,
        description="Longest a call waits for its turn under the limits before its record ends in error.",
    )
    attempt_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait for one attempt's reply before it is retried.",
    )
    max_retries: int = Field(default=4, ge=0, le=20)
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or addresses) this provider may reach although they are loopback, private,"
                    " link-local...; every other address is refused when the connection is opened.",
    )
    allow_secrets: list[str] = Field(
        default_factory=list, max_length=50,
        description="Providers file only: environment variables, besides api_key_env, whose values steps may"
                    " send to this provider (the http step's headers).",
    )
    idempotency_keys: bool | None = Field(
        default=None,
        description="Send an Idempotency-Key header, the same on every attempt of one call, with POSTs;"
                    " default: yes for openai providers, no for http ones.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("allow_secrets")
    @classmethod
    def _env_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.match(ENV_NAME, name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names

    def allowed_secrets(self) -> set[str]:
        """The environment variables whose values may be sent to this provider."""
        return {*([self.api_key_env] if self.api_key_env else []), *self.allow_secrets}

    def sends_idempotency_keys(self) -> bool:
        # OpenAI-compatible APIs accept the header (others ignore it); a JSON API may reject one it does not know.
        return self.idempotency_keys if self.idempotency_keys is not None else self.kind == ProviderKind.openai


class ProviderError(ValueError):
    """A provider that is missing, misdeclared or not allowed."""


class ProvidersFile(StrictModel):
    """The operator's providers file: its providers, and the private hosts a workflow's own providers
    may reach. A workflow could otherwise allow itself any address (a cloud's metadata service at
    169.254.169.254, the cluster's network): only the operator opens such doors. Loopback
    (`localhost`, 127.0.0.0/8, ::1) a workflow may allow itself: a model server on the same
    machine is the common case, and nothing beyond the machine is reached through it."""

    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    workflow_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or addresses), besides loopback, that providers declared in workflows may"
                    " list in allow_hosts.",
    )

    def allows_for_workflows(self, host: str) -> bool:
        key = host.strip("[]").lower().rstrip(".")
        ip = parse_address(key)
        if key == "localhost" or (ip is not None and ip.is_loopback):
            return True
        return key in {h.strip("[]").lower().rstrip(".") for h in self.workflow_allow_hosts}


def load_providers_file(path: str | Path) -> ProvidersFile:
    """The providers file; an empty one when the file does not exist. An older file that is only a
    mapping of names to providers is read as such."""
    path = Path(path)
    if not path.exists():
        return ProvidersFile()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProviderError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProviderError(f"{path}: expected a mapping with 'providers' (names to providers)")
    data = raw if "providers" in raw else {"providers": raw}
    if not isinstance(data["providers"], dict):
        raise ProviderError(f"{path}: providers: expected a mapping of provider names to providers")
    try:
        return ProvidersFile.model_validate(data)
    except ValidationError as exc:
        raise ProviderError(f"{path}: " + "; ".join(pydantic_errors(exc))) from None


def account_of(name: str, provider: ProviderSpec) -> str:
    return provider.account or name


def secret_names(provider: ProviderSpec) -> list[str]:
    """The environment variables a provider's calls read (its key)."""
    return [provider.api_key_env] if provider.api_key_env else []


def check_host(provider: ProviderSpec, url: str, *, resolve: bool = True) -> None:
    """Refuse loopback, link-local, private... addresses unless the allow-list names the host: a
    spec must not be able to steer calls into the cluster's own network. An early check, so that a
    misdeclared provider fails its run at once; the connection itself is guarded again when it is
    opened (pipelines.inference.safe_transport), whatever the name resolves to then. Without
    `resolve`, only a host written as an address is checked."""
    host = urlsplit(url).hostname or ""
    allowed = {name.strip("[]").lower() for name in provider.allow_hosts}
    if host.lower() in allowed:
        return
    literal = parse_address(host)
    if literal is not None:
        addresses = [str(literal)]
    elif not resolve:
        return
    else:
        try:
            addresses = list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, None)))
        except socket.gaierror as exc:
            raise ProviderError(f"cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        ip = parse_address(address)
        why = refusal(ip) if ip is not None and str(ip) not in allowed else None
        if why:
            raise ProviderError(f"{host} resolves to {ip}, {why}; list {host} in the provider's allow_hosts to call it")
