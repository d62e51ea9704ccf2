"""http: columns from a JSON API, one request per record."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import pyarrow as pa
from pydantic import Field, field_validator

from pipelines.augmenters.inference_base import (
    InferenceAugmenter,
    InferenceParams,
    InvalidReply,
)
from pipelines.augmenters.registry import register
from pipelines.inference.client import Request
from pipelines.inference.templates import (
    checked_template,
    placeholders,
    render,
    template_hash,
)
from pipelines.spec.base import StrictModel, check_names
from pipelines.spec.providers import ENV_NAME, ProviderKind, ProviderSpec, check_host

PATH_STEP = re.compile(r"[A-Za-z0-9_\-]+|\[\d+\]")


class ValueType(str, Enum):
    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"
    json = "json"  # any JSON value, stored as its JSON text


ARROW = {ValueType.string: pa.string(), ValueType.integer: pa.int64(), ValueType.number: pa.float64(),
         ValueType.boolean: pa.bool_(), ValueType.json: pa.string()}


class HttpOutput(StrictModel):
    path: str = Field(
        min_length=1, max_length=500, description="Where in the reply, e.g. company.employees or tags[0]."
    )
    type: ValueType = ValueType.string

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if "".join(PATH_STEP.findall(value.replace(".", ""))) != value.replace(".", ""):
            raise ValueError(f"{value!r} is not a path like a.b[0].c")
        return value


class HttpParams(InferenceParams):
    method: Literal["GET", "POST"] = "GET"
    path: str = Field(
        default="",
        max_length=2000,
        description="Appended to the provider's base_url; {{field}} values are URL-encoded.",
    )
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters, values with {{field}} placeholders."
    )
    body: dict[str, Any] | None = Field(
        default=None, description="JSON body (POST); strings may hold {{field}} placeholders."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Header name -> environment variable holding its value."
    )
    outputs: dict[str, HttpOutput] = Field(min_length=1, max_length=100)

    @field_validator("path")
    @classmethod
    def _renderable(cls, value: str) -> str:
        return checked_template(value) or ""

    @field_validator("headers")
    @classmethod
    def _env_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, env in headers.items():
            if not re.match(ENV_NAME, env):
                raise ValueError(
                    f"header {name!r}: {env!r} is not an environment variable name (values never go in specs)"
                )
        return headers

    @field_validator("outputs")
    @classmethod
    def _names(cls, outputs: dict[str, HttpOutput]) -> dict[str, HttpOutput]:
        check_names(outputs, "output name")
        return outputs


@register("http")
class Http(InferenceAugmenter):
    """Calls a JSON API once per record (GET or POST) and maps reply fields to columns by path.
    A path absent from the reply gives null; a value of the wrong type makes the record 'error'.
    The provider's host must not be loopback, link-local or private unless its allow_hosts names it
    (checked at setup, and again for the address each connection is opened to). Header variables
    must be allowed for the provider in the providers file (`allow_secrets`).

    Reads: every {{field}} of `path`, `query` and `body`, and `skip_if_empty`.
    Adds: each of `outputs` (typed), `<step>_status`, `<step>_error`, `<step>_provenance`.
    """

    Params = HttpParams
    params: HttpParams
    provider_kind = ProviderKind.http

    def reads(self) -> list[tuple[str, str]]:
        found = [("path", c) for c in placeholders(self.params.path)]
        found += [("query", c) for value in self.params.query.values() for c in placeholders(value)]
        found += [("body", c) for text in _strings(self.params.body) for c in placeholders(text)]
        return found + self.reads_required()

    def outputs(self) -> dict[str, pa.DataType]:
        return {name: ARROW[out.type] for name, out in self.params.outputs.items()}

    def template_hash(self) -> str | None:
        p = self.params
        return template_hash(p.method, p.path, p.query, p.body, {k: v.model_dump() for k, v in p.outputs.items()})

    def identity(self) -> dict[str, Any]:
        return {"outputs": {k: v.model_dump() for k, v in self.params.outputs.items()}}

    def check_provider(self, provider: ProviderSpec) -> list[tuple[str, str]]:
        allowed = provider.allowed_secrets()
        return [
            (f"headers.{header}", f"environment variable {env!r} may not be sent to provider {self.params.provider!r}:"
                                  " the providers file lists the variables a provider may receive (allow_secrets)")
            for header, env in self.params.headers.items() if env not in allowed
        ]

    def setup(self) -> None:
        super().setup()
        assert self.provider is not None
        check_host(self.provider, self.provider.base_url)  # a configuration error: fails the run at once

    def secret_names(self, providers: Mapping[str, Any]) -> list[str]:
        return [*super().secret_names(providers), *self.params.headers.values()]

    def build_request(self, record: Mapping[str, Any]) -> Request:
        assert self.provider is not None
        url = self.provider.base_url + render(self.params.path, record, escape=_path_segment)
        if urlsplit(url).netloc != urlsplit(self.provider.base_url).netloc:
            raise ValueError("the rendered path changes the host")
        query = {name: render(value, record) for name, value in self.params.query.items()}
        body = _render_json(self.params.body, record) if self.params.method == "POST" else None
        headers = {**self.auth_headers(), **{name: self.secret(env) for name, env in self.params.headers.items()}}
        return Request(self.params.method, url, json=body, params=query or None, headers=headers)

    def usage(self, body: Any) -> tuple[int, int] | None:
        return None  # a JSON API bills per request (prices.per_request), for each answered one

    def parse(self, body: Any) -> dict[str, Any]:
        values = {}
        for name, out in self.params.outputs.items():
            found, value = _at(body, out.path)
            values[name] = _typed(value, out.type, out.path) if found else None
        return values


def _path_segment(value: str) -> str:
    """A value as one opaque path segment: '/', '?', '#', '@' and dots are encoded, so neither
    the host nor the path ('..') can be changed by a record."""
    return quote(value, safe="").replace(".", "%2E")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _render_json(value: Any, record: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, record)
    if isinstance(value, dict):
        return {k: _render_json(v, record) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, record) for v in value]
    return value


def _at(body: Any, path: str) -> tuple[bool, Any]:
    current = body
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(current, list) or index >= len(current):
                return False, None
            current = current[index]
        else:
            if not isinstance(current, dict) or part not in current:
                return False, None
            current = current[part]
    return True, current


def _typed(value: Any, kind: ValueType, path: str) -> Any:
    if value is None:
        return None
    if kind == ValueType.json:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    ok = {
        ValueType.string: isinstance(value, str),
        ValueType.integer: isinstance(value, int) and not isinstance(value, bool)
        or isinstance(value, float) and value.is_integer(),
        ValueType.number: isinstance(value, (int, float)) and not isinstance(value, bool),
        ValueType.boolean: isinstance(value, bool),
    }[kind]
    if not ok:
        raise InvalidReply(f"{path}: expected {kind.value}, got {json.dumps(value)[:100]}")
    return int(value) if kind == ValueType.integer else value
