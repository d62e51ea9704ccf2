"""embed: a vector for a text column, from an OpenAI-compatible embeddings endpoint or from a
local model that installs from the package index and loads offline."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from pipelines.augmenters.base import values_of
from pipelines.augmenters.inference_base import (
    InferenceAugmenter,
    InferenceParams,
    InvalidReply,
    Outcome,
    estimate_tokens,
)
from pipelines.augmenters.registry import register
from pipelines.inference.client import Request
from pipelines.inference.templates import text_of
from pipelines.spec.base import IDENTIFIER
from pipelines.spec.providers import ProviderKind, ProviderSpec


class EmbedParams(InferenceParams):
    # Optional here alone: a local model calls no provider.
    provider: str | None = Field(  # type: ignore[assignment]
        default=None, pattern=IDENTIFIER, description="An openai-kind provider...")
    # Its weights ship inside the wheel: nothing is downloaded.
    local_model: Literal["wordllama-l2-supercat"] | None = Field(
        default=None, description="...or a local model (extra `local-embed`), computed in the worker.",
    )
    normalize: bool = Field(default=True, description="Scale local vectors to unit length.")
    column: str = Field(pattern=IDENTIFIER, description="The text to embed.")
    output: str | None = Field(default=None, pattern=IDENTIFIER, description="Default: <column>_embedding.")
    model: str | None = Field(default=None, min_length=1, description="Default: the provider's model.")
    dimensions: int | None = Field(default=None, ge=1, le=65_536, description="Asked of the model, and checked.")

    @model_validator(mode="after")
    def _one_source(self) -> "EmbedParams":
        if (self.provider is None) == (self.local_model is None):
            raise ValueError("set exactly one of provider and local_model")
        if self.local_model and self.dimensions and self.dimensions > 256:
            raise ValueError(f"{self.local_model} has 256 dimensions at most")
        return self


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

    @classmethod
    def provider_names(cls, params: Mapping[str, Any]) -> list[str]:
        return super().provider_names(params) if params.get("provider") else []

    @property
    def calls_provider(self) -> bool:
        return self.params.local_model is None

    def provider_errors(self, providers: Mapping[str, ProviderSpec]) -> list[tuple[str, str]]:
        return [] if self.params.local_model else super().provider_errors(providers)

    def setup(self) -> None:
        if self.params.local_model is None:
            super().setup()
            return
        try:
            import wordllama  # the optional extra local-embed
        except ImportError:
            raise RuntimeError(
                f"local_model {self.params.local_model!r} needs the local-embed extra:"
                " pip install 'augment[local-embed]'"
            ) from None
        # The weights and tokenizer ship in the wheel; pointing the cache at the package and
        # disabling downloads guarantees that nothing is fetched from a model hub at run time.
        self.local = wordllama.WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True, trunc_dim=self.params.dimensions,
        )

    def process_batch(self, batch: pd.DataFrame) -> Mapping[str, Any]:
        if self.params.local_model is None:
            return super().process_batch(batch)
        texts = values_of(batch[self.params.column])
        todo = [i for i, t in enumerate(texts) if t is not None and str(t).strip()]
        vectors = self.local.embed([str(texts[i]) for i in todo]) if todo else np.zeros((0, 0), np.float32)
        if self.params.normalize and len(todo):
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        outcomes = [Outcome("skipped", error=f"skipped: {self.params.column} is empty",
                            provenance=self._provenance(attempts=0)) for _ in texts]
        for row, vector in zip(todo, vectors):
            outcomes[row] = Outcome(
                "ok", values={self.output_name(): vector.tolist()}, provenance=self._provenance(attempts=0)
            )
        return self.columns_of(outcomes)

    def check_provider(self, provider: ProviderSpec) -> list[tuple[str, str]]:
        if not (self.params.model or provider.model):
            return [("model", f"no model: set it here or as the default model of provider {self.params.provider!r}")]
        return []

    def model(self) -> str | None:
        if self.params.local_model:
            return self.params.local_model
        return self.params.model or (self.provider.model if self.provider else None)

    def build_request(self, record: Mapping[str, Any]) -> Request:
        assert self.provider is not None
        body: dict[str, Any] = {"model": self.model(), "input": text_of(record.get(self.params.column))}
        if self.params.dimensions:
            body["dimensions"] = self.params.dimensions
        headers = self.auth_headers()
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
