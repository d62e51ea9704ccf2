"""llm: columns written by a language model, as structured output checked against a schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

import pyarrow as pa
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from pipelines.augmenters.inference_base import (
    InferenceAugmenter,
    InferenceParams,
    InvalidReply,
    estimate_tokens,
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
from pipelines.spec.providers import ProviderKind, ProviderSpec


class OutputType(str, Enum):
    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"


ARROW = {OutputType.string: pa.string(), OutputType.integer: pa.int64(),
         OutputType.number: pa.float64(), OutputType.boolean: pa.bool_()}
PYTHON = {OutputType.string: str, OutputType.integer: int, OutputType.number: float, OutputType.boolean: bool}


class OutputField(StrictModel):
    type: OutputType = OutputType.string
    description: str | None = Field(default=None, max_length=2000)
    enum: list[str] | None = Field(default=None, min_length=1, max_length=500, description="Strings only.")

    @model_validator(mode="after")
    def _enum_of_strings(self) -> "OutputField":
        if self.enum is not None and self.type != OutputType.string:
            raise ValueError("enum applies to string outputs")
        return self


class LlmParams(InferenceParams):
    model: str | None = Field(default=None, min_length=1, description="Default: the provider's model.")
    system: str | None = Field(default=None, max_length=100_000)
    user: str = Field(min_length=1, max_length=100_000, description="The prompt, with {{field}} placeholders.")
    outputs: dict[str, OutputField] = Field(min_length=1, max_length=100)
    prefix: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9_]{0,47})?$", description="Start of the added names.")
    temperature: float | None = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=512, ge=1, le=100_000, description="Most tokens a reply may have.")
    invalid_retries: int = Field(default=2, ge=0, le=10, description="Extra calls when a reply breaks the schema.")

    @field_validator("system", "user")
    @classmethod
    def _renderable(cls, value: str | None) -> str | None:
        return checked_template(value)

    @field_validator("outputs")
    @classmethod
    def _names(cls, outputs: dict[str, OutputField]) -> dict[str, OutputField]:
        check_names(outputs, "output name")
        return outputs


@register("llm")
class Llm(InferenceAugmenter):
    """Renders the prompt templates for each record, asks the model for a JSON object of the
    declared outputs (sent as a JSON-schema response format), and validates the reply with
    pydantic; an invalid reply is asked again up to `invalid_retries` times, then the record
    carries status 'error' with the reason.

    Reads: every {{field}} of `system` and `user` (any type; nulls render empty).
    Adds: `{prefix}{output}` for each output (typed), `<step>_status`, `<step>_error`, `<step>_provenance`.
    """

    Params = LlmParams
    params: LlmParams
    provider_kind = ProviderKind.openai

    def __init__(self, params: LlmParams, step_name: str, overwrite: bool = False) -> None:
        super().__init__(params, step_name, overwrite)
        self.invalid_retries = params.invalid_retries
        # strict: "5" is not an integer, 1 is not a boolean. (pydantic's overloads do not type fields given
        # as a spread dict.)
        self.reply_model = create_model(  # type: ignore[call-overload]
            f"{step_name}_reply",
            __config__=ConfigDict(extra="forbid", strict=True),
            **{name: (_python_type(field), ...) for name, field in params.outputs.items()},
        )

    def reads(self) -> list[tuple[str, str]]:
        templates = [("system", self.params.system or ""), ("user", self.params.user)]
        return [(param, column) for param, text in templates for column in placeholders(text)] + self.reads_required()

    def outputs(self) -> dict[str, pa.DataType]:
        return {self.params.prefix + name: ARROW[field.type] for name, field in self.params.outputs.items()}

    def check_provider(self, provider: ProviderSpec) -> list[tuple[str, str]]:
        if not (self.params.model or provider.model):
            return [("model", f"no model: set it here or as the default model of provider {self.params.provider!r}")]
        return []

    def model(self) -> str | None:
        return self.params.model or (self.provider.model if self.provider else None)

    def json_schema(self) -> dict[str, Any]:
        properties = {}
        for name, field in self.params.outputs.items():
            prop: dict[str, Any] = {"type": field.type.value}
            if field.description:
                prop["description"] = field.description
            if field.enum:
                prop["enum"] = field.enum
            properties[name] = prop
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    def template_hash(self) -> str | None:
        return template_hash(self.params.system, self.params.user, self.json_schema())

    def build_request(self, record: Mapping[str, Any]) -> Request:
        assert self.provider is not None
        messages = []
        if self.params.system:
            messages.append({"role": "system", "content": render(self.params.system, record)})
        messages.append({"role": "user", "content": render(self.params.user, record)})
        body: dict[str, Any] = {
            "model": self.model(),
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "record", "schema": self.json_schema(), "strict": True},
            },
            "max_tokens": self.params.max_tokens,
        }
        if self.params.temperature is not None:
            body["temperature"] = self.params.temperature
        headers = self.auth_headers()
        return Request("POST", f"{self.provider.base_url}/chat/completions", json=body, headers=headers)

    def estimate(self, request: Request) -> tuple[int, int]:
        text = "".join(m["content"] for m in request.json["messages"]) + json.dumps(self.json_schema())
        return estimate_tokens(text), self.params.max_tokens

    def parse(self, body: Any) -> dict[str, Any]:
        try:
            choice = body["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise InvalidReply("the reply has no choices[0].message") from None
        if message.get("refusal"):
            raise InvalidReply(f"the model refused: {str(message['refusal'])[:300]}")
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidReply("the reply's message has no text content")
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            cut = " (the reply was cut off: raise max_tokens)" if choice.get("finish_reason") == "length" else ""
            raise InvalidReply(f"the reply is not valid JSON: {exc.msg} at character {exc.pos}{cut}") from None
        if isinstance(data, dict):  # JSON has no integer type of its own: 3.0 is an integer
            data = {k: _whole(v, self.params.outputs.get(k)) for k, v in data.items()}
        try:
            values = self.reply_model.model_validate(data).model_dump()
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:5])
            raise InvalidReply(f"the reply does not match the output schema: {reasons}") from None
        return {self.params.prefix + name: value for name, value in values.items()}


def _python_type(field: OutputField) -> Any:
    if field.enum:
        return Literal[tuple(field.enum)]
    if field.type == OutputType.number:
        return float | int
    return PYTHON[field.type]


def _whole(value: Any, field: OutputField | None) -> Any:
    if field is not None and field.type == OutputType.integer and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
