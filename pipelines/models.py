"""Building blocks shared by the spec models and the provider models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"


class StrictModel(BaseModel):
    """A spec model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
