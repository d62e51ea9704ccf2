"""embed: a vector for a text column, from an OpenAI-compatible embeddings endpoint."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from pydantic import Field

from pipelines.inference.client import Request
from pipelines.inference.step import InferenceAugmenter, InferenceParams, InvalidReply, estimate_tokens
from pipelines.inference.templates import text_of
from pipelines.models import IDENTIFIER
from pipelines.providers import ProviderKind, ProviderSpec, api_key
from pipelines.registry import register


class EmbedParams(InferenceParams):
    column: str = Field(pattern=IDENTIFIER, description="The text to embed.")
    output: str | None = Field(default=None, pattern=IDENTIFIER, description="Default: <column>_embedding.")
    model: str | None = Field(default=None, min_length=1, description="Default: the provider's model.")
    dimensions: int | None = Field(default=None, ge=1, le=65_536, description="Asked of the model, and checked.")


@register("embed")
class Embed(InferenceAugmenter):
    """One embedding per record; a blank text is not sent (status 'skipped'). The vector is
    checked: numbers only, finite, of the asked dimension.

    Reads: `column` (its text).
    Adds: `output` (list<float32>), `<step>_status`, `<step>_error`, `<step>_provenance`.
    """

    Params = EmbedParams
    params: EmbedParams
    provider_kind = ProviderKind.openai

    def __init__(self, params: EmbedParams, step_name: str, overwrite: bool = False) -> None:
        if params.column not in params.skip_if_empty:
            params = params.model_copy(update={"skip_if_empty": [*params.skip_if_empty, params.column]})
        super().__init__(params, step_name, overwrite)

    def reads(self) -> list[tuple[str, str]]:
        others = [(param, c) for param, c in self.reads_required() if c != self.params.column]
        return [("column", self.params.column), *others]

    def output_name(self) -> str:
        return self.params.output or f"{self.params.column}_embedding"

    def outputs(self) -> dict[str, pa.DataType]:
        return {self.output_name(): pa.list_(pa.float32())}

    def check_provider(self, provider: ProviderSpec) -> list[tuple[str, str]]:
        if not (self.params.model or provider.model):
            return [("model", f"no model: set it here or as the default model of provider {self.params.provider!r}")]
        return []

    def model(self) -> str | None:
        return self.params.model or (self.provider.model if self.provider else None)

    def build_request(self, record: Mapping[str, Any]) -> Request:
        assert self.provider is not None
        body: dict[str, Any] = {"model": self.model(), "input": text_of(record.get(self.params.column))}
        if self.params.dimensions:
            body["dimensions"] = self.params.dimensions
        key = api_key(self.provider)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return Request("POST", f"{self.provider.base_url}/embeddings", json=body, headers=headers)

    def estimate(self, request: Request) -> tuple[int, int]:
        return estimate_tokens(request.json["input"]), 0

    def parse(self, body: Any) -> dict[str, Any]:
        try:
            vector = body["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError):
            raise InvalidReply("the reply has no data[0].embedding") from None
        if not isinstance(vector, list) or not vector:
            raise InvalidReply("the embedding is not a non-empty list")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
            raise InvalidReply("the embedding holds values that are not finite numbers")
        if self.params.dimensions and len(vector) != self.params.dimensions:
            raise InvalidReply(f"the embedding has {len(vector)} dimensions, {self.params.dimensions} were asked")
        return {self.output_name(): [float(x) for x in vector]}
