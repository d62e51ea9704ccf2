"""Building blocks shared by the spec models and the provider models."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"


class StrictModel(BaseModel):
    """A spec model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def check_names(names: Iterable[str], what: str) -> None:
    """Raise ValueError for the first name that cannot be a column name."""
    for name in names:
        if not re.match(IDENTIFIER, name):
            raise ValueError(f"{what} {name!r} must start with a letter and hold only letters, digits and _")
